"""Event storage: idempotent lifecycle upserts, raw messages, snapshots, rejected payloads, and queries.

An event id is one row in ``events`` whatever the number of times its
``new``/``update``/``end`` messages arrive: each raw message is keyed by the
SHA-256 of its bytes, so a redelivered or replayed message changes
nothing, and the lifecycle columns are folded with order-independent rules
(earliest ``first_seen``, latest ``last_seen`` and label, highest score per label).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Row, and_, case, func, or_, select, true, update
from sqlalchemy.orm import Session

from hub.storage.database import Store
from hub.storage.rows import EventMessage, EventRow, SnapshotRow
from shared.messages import Event

log = logging.getLogger(__name__)

#: Among messages with the same timestamp, the later type wins the label.
TYPE_ORDER = {"new": 0, "update": 1, "end": 2}


@dataclass(frozen=True)
class EventFilter:
    """Which events a listing, an export or a count covers: one site, node and label, received in ``[since,
    until)``. A field left ``None`` does not filter. Times are the hub's (``received_at``): a node whose clock is
    wrong cannot move its events into or out of a range.

    Example::

        rows, total = EventLog(store, snapshots).query(EventFilter(site="hq", label="no_mask"), limit=20)
    """

    site: str | None = None
    node: str | None = None
    label: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        """The SQL conditions of this filter (none: every event)."""
        conditions = []
        if self.site:
            conditions.append(EventRow.site == self.site)
        if self.node:
            conditions.append(EventRow.node == self.node)
        if self.label:
            conditions.append(EventRow.label == self.label)
        if self.since:
            conditions.append(EventRow.received_at >= self.since)
        if self.until:
            conditions.append(EventRow.received_at < self.until)
        return conditions


#: The filter that covers every event.
EVERY_EVENT = EventFilter()


@dataclass(slots=True)
class EventIn:
    """A valid event message waiting to be stored, with the bytes it arrived as (``raw``) and whether its
    ``ts`` was off the hub's clock (``clock_skewed``)."""

    event: Event
    received_at: datetime
    raw: bytes | None = None
    clock_skewed: bool = False

    @property
    def payload(self) -> bytes:
        """The message as received (or as the edge serializes it, when built in code)."""
        return self.raw if self.raw is not None else self.event.to_json()

    @property
    def digest(self) -> str:
        """Identity of the message: SHA-256 of its bytes (a redelivery or an outbox replay is byte-identical)."""
        return hashlib.sha256(self.payload).hexdigest()


@dataclass(frozen=True)
class SnapshotIn:
    """A JPEG received for an event."""

    site: str
    node: str
    event_id: str
    data: bytes
    received_at: datetime


@dataclass
class WriteResult:
    """What one batch changed: touched event ids (``no_mask``: those with a no_mask message outside quiet hours,
    the alert candidates), messages stored, duplicates ignored, stored messages with a skewed clock per
    ``(site, node)``."""

    touched: list[str] = field(default_factory=list)
    no_mask: list[str] = field(default_factory=list)
    stored: int = 0
    duplicates: int = 0
    skewed: Counter[tuple[str, str]] = field(default_factory=Counter)


@dataclass(frozen=True)
class EventPage:
    """One page of an export: events in listing order and the ids among them that have a snapshot."""

    rows: list[EventRow]
    snapshots: set[str]


def listing_key() -> tuple[tuple[Any, bool], ...]:
    """The order of every event listing as ``(column, descending)`` pairs, newest first; unique, so it is also
    the keyset of :meth:`EventLog.pages`. The one place to change when listings order by another column."""
    return ((EventRow.received_at, True), (EventRow.id, False))


def _listing_order() -> list[Any]:
    return [column.desc() if descending else column.asc() for column, descending in listing_key()]


def _after(row: EventRow) -> ColumnElement[bool]:
    """Rows that come after ``row`` in :func:`listing_key` order (a lexicographic keyset condition)."""
    key = [(column, descending, getattr(row, column.key)) for column, descending in listing_key()]
    later = []
    for i, (column, descending, value) in enumerate(key):
        ties = [earlier == earlier_value for earlier, _, earlier_value in key[:i]]
        later.append(and_(*ties, column < value if descending else column > value))
    first, descending, value = key[0]
    bound = first <= value if descending else first >= value  # a range on the leading column, for its index
    return and_(bound, or_(*later))


def _later(a: EventIn, b: EventIn) -> bool:
    """Whether ``a`` is the later observation of the two (by time, then lifecycle type)."""
    return (a.event.ts, TYPE_ORDER[a.event.type]) > (b.event.ts, TYPE_ORDER[b.event.type])


def fold(messages: Iterable[EventIn], now: datetime) -> dict[str, dict[str, Any]]:
    """Fold messages into one ``events`` row per id (the rules of the module docstring); ``received_at`` is the
    earliest receipt (the stored row keeps its own on conflict), ``updated_at`` is ``now``."""
    rows: dict[str, dict[str, Any]] = {}
    latest: dict[str, EventIn] = {}
    for item in messages:
        ev = item.event
        row = rows.get(ev.id)
        if row is None:
            row = rows[ev.id] = {
                "id": ev.id,
                "site": ev.site,
                "node": ev.node,
                "first_seen": ev.ts,
                "last_seen": ev.ts,
                "mask_score": None,
                "no_mask_score": None,
                "started": False,
                "ended_at": None,
                "messages": 0,
                "snapshot_expected": False,
                "alerted": False,
                "clock_skewed": False,
                "received_at": item.received_at,
                "updated_at": now,
            }
            latest[ev.id] = item
        row["received_at"] = min(row["received_at"], item.received_at)
        row["first_seen"] = min(row["first_seen"], ev.ts)
        row["last_seen"] = max(row["last_seen"], ev.ts)
        key = f"{ev.label}_score"
        row[key] = ev.score if row[key] is None else max(row[key], ev.score)
        row["started"] = row["started"] or ev.type == "new"
        if ev.type == "end":
            row["ended_at"] = ev.ts if row["ended_at"] is None else max(row["ended_at"], ev.ts)
        row["messages"] += 1
        row["snapshot_expected"] = row["snapshot_expected"] or ev.snapshot
        row["clock_skewed"] = row["clock_skewed"] or item.clock_skewed
        if _later(item, latest[ev.id]):
            latest[ev.id] = item
    for event_id, row in rows.items():
        ev = latest[event_id].event
        row.update(
            label=ev.label,
            box=list(ev.box),
            angle=ev.angle,
            face_score=ev.face_score,
            frames=ev.track.frames if ev.track else None,
            best_score=row[f"{ev.label}_score"],
        )
    return rows


def _max_of(column: Any, new: Any) -> Any:
    return case((column.is_(None), new), (new.is_(None), column), (new > column, new), else_=column)


class EventLog:
    """Reads and writes events, their raw messages and snapshots.

    :param store: the database.
    :param snapshot_dir: folder for snapshot JPEGs (``<site>/<node>/<event id>.jpg``).
    """

    def __init__(self, store: Store, snapshot_dir: Path) -> None:
        self.store = store
        self.snapshot_dir = Path(snapshot_dir)

    # -- writes (inside the ingest transaction) --------------------------------

    @cached_property
    def _message_insert(self) -> Any:
        table = EventMessage.__table__
        return (
            self.store.insert(table).on_conflict_do_nothing(index_elements=[table.c.digest]).returning(table.c.digest)
        )

    @cached_property
    def _event_upsert(self) -> Any:
        """``INSERT ... ON CONFLICT DO UPDATE`` folding a batch row into the stored one (built once)."""
        old = EventRow.__table__.c
        ins = self.store.insert(EventRow.__table__)
        new = ins.excluded
        newer = new.last_seen >= old.last_seen
        label = case((newer, new.label), else_=old.label)
        mask_score = _max_of(old.mask_score, new.mask_score)
        no_mask_score = _max_of(old.no_mask_score, new.no_mask_score)
        return ins.on_conflict_do_update(
            index_elements=[old.id],
            set_={
                "first_seen": case((new.first_seen < old.first_seen, new.first_seen), else_=old.first_seen),
                "last_seen": case((newer, new.last_seen), else_=old.last_seen),
                "label": label,
                "best_score": case((label == "mask", mask_score), else_=no_mask_score),
                "box": case((newer, new.box), else_=old.box),
                "angle": case((newer, new.angle), else_=old.angle),
                "face_score": case((newer, new.face_score), else_=old.face_score),
                "frames": case((newer, new.frames), else_=old.frames),
                "mask_score": mask_score,
                "no_mask_score": no_mask_score,
                "started": or_(old.started, new.started),
                "ended_at": _max_of(old.ended_at, new.ended_at),
                "messages": old.messages + new.messages,
                "snapshot_expected": or_(old.snapshot_expected, new.snapshot_expected),
                "clock_skewed": or_(old.clock_skewed, new.clock_skewed),
                "updated_at": new.updated_at,
            },
        )

    def write(self, session: Session, items: Sequence[EventIn]) -> WriteResult:
        """Store new raw messages and fold them into their events; duplicates change nothing."""
        result = WriteResult()
        if not items:
            return result
        unique = {item.digest: item for item in items}
        connection = session.connection()  # Core executemany: one prepared statement per batch
        inserted = set(
            connection.execute(
                self._message_insert,
                [
                    {
                        "digest": digest,
                        "event_id": item.event.id,
                        "type": item.event.type,
                        "ts": item.event.ts,
                        "label": item.event.label,
                        "score": item.event.score,
                        "payload": item.payload.decode(),
                        "received_at": item.received_at,
                    }
                    for digest, item in unique.items()
                ],
            ).scalars()
        )
        result.stored = len(inserted)
        result.skewed.update((unique[d].event.site, unique[d].event.node) for d in inserted if unique[d].clock_skewed)
        result.duplicates = len(items) - len(inserted)
        if not inserted:
            return result
        now = max(item.received_at for item in items)
        rows = fold((unique[d] for d in inserted), now)
        connection.execute(self._event_upsert, list(rows.values()))
        result.touched = sorted(rows)
        # quiet-hours messages are stored but make no alert candidate (the node marks them: its clock and schedule
        # at the observation decide, not the hub's view when a replayed message arrives)
        result.no_mask = sorted(
            {unique[d].event.id for d in inserted if unique[d].event.label == "no_mask" and not unique[d].event.quiet}
        )
        return result

    def save_snapshots(self, session: Session, snapshots: Sequence[SnapshotIn]) -> None:
        """Write each JPEG to disk (atomically) and record its path."""
        if not snapshots:
            return
        rows = []
        for snap in snapshots:
            relative = Path(snap.site) / snap.node / f"{snap.event_id}.jpg"
            target = self.snapshot_dir / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".part")
            with open(partial, "wb") as fh:
                fh.write(snap.data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(partial, target)
            rows.append(
                {
                    "event_id": snap.event_id,
                    "site": snap.site,
                    "node": snap.node,
                    "path": relative.as_posix(),
                    "size": len(snap.data),
                    "received_at": snap.received_at,
                }
            )
        stmt = self.store.insert(SnapshotRow)
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=[SnapshotRow.event_id],
                set_={"path": stmt.excluded.path, "size": stmt.excluded.size, "received_at": stmt.excluded.received_at},
            ),
            rows,
        )

    def claim_no_mask(
        self, session: Session, ids: Sequence[str], min_face_score: float | None = None
    ) -> list[Row[Any]]:
        """Events among ``ids`` now labelled ``no_mask`` that have raised no alert yet, first received first; marks them
        alerted. With ``min_face_score``, an event whose face score is lower is not claimed (a later message
        with a higher score may still raise its alert); events without a face score (nodes whose classifier
        has no not-a-face class) are claimed as before.

        Rows have ``id``, ``site``, ``node``, ``best_score`` and ``snapshot_expected``.
        """
        if not ids:
            return []
        table = EventRow.__table__
        verified = (
            true()
            if min_face_score is None
            else or_(table.c.face_score.is_(None), table.c.face_score >= min_face_score)
        )
        rows = session.execute(
            update(table)
            .where(table.c.id.in_(ids), table.c.label == "no_mask", table.c.alerted.is_(False), verified)
            .values(alerted=True)
            .returning(
                table.c.id,
                table.c.site,
                table.c.node,
                table.c.best_score,
                table.c.snapshot_expected,
                table.c.received_at,
                table.c.first_seen,
            )
        ).all()
        return sorted(rows, key=lambda row: (row.received_at, row.first_seen, row.id))

    # -- reads ----------------------------------------------------------------

    def query(
        self, where: EventFilter = EVERY_EVENT, *, limit: int = 100, offset: int = 0
    ) -> tuple[list[EventRow], int]:
        """Events matching ``where``, newest first, and how many match in total.

        The order is by ``received_at``, the hub's clock: a node whose clock is wrong cannot move its events to
        the top.
        """
        conditions = where.conditions()
        with self.store.session() as session:
            total = session.scalar(select(func.count()).select_from(EventRow).where(*conditions)) or 0
            rows = list(
                session.scalars(
                    select(EventRow).where(*conditions).order_by(*_listing_order()).limit(limit).offset(offset)
                )
            )
        return rows, total

    def pages(
        self, where: EventFilter = EVERY_EVENT, *, page_size: int = 1000, limit: int | None = None
    ) -> Iterator[EventPage]:
        """Every event matching ``where`` (or the first ``limit``), in listing order, ``page_size`` at a time.

        Keyset paging on :func:`listing_key`, one short read per page: memory stays one page whatever the number
        of events, and an event stored during the export neither repeats nor shifts the others.
        """
        if page_size < 1 or (limit is not None and limit < 1):
            raise ValueError(f"page_size and limit must be at least 1, got {page_size} and {limit}")
        conditions = where.conditions()
        last: EventRow | None = None
        left = limit
        while left is None or left > 0:
            size = page_size if left is None else min(page_size, left)
            page = conditions if last is None else [*conditions, _after(last)]
            with self.store.session() as session:
                rows = list(session.scalars(select(EventRow).where(*page).order_by(*_listing_order()).limit(size)))
            if not rows:
                return
            yield EventPage(rows, self.has_snapshots([row.id for row in rows]))
            if len(rows) < size:
                return
            last = rows[-1]
            left = None if left is None else left - len(rows)

    def get(self, event_id: str) -> EventRow | None:
        """One event by id."""
        with self.store.session() as session:
            return session.get(EventRow, event_id)

    def by_ids(self, ids: Sequence[str]) -> list[EventRow]:
        """The events among ``ids`` that exist."""
        if not ids:
            return []
        with self.store.session() as session:
            return list(session.scalars(select(EventRow).where(EventRow.id.in_(ids))))

    def raw_messages(self, event_id: str) -> list[dict[str, Any]]:
        """The raw messages of one event, oldest first."""
        with self.store.session() as session:
            texts = session.scalars(
                select(EventMessage.payload)
                .where(EventMessage.event_id == event_id)
                .order_by(EventMessage.ts, EventMessage.id)
            )
            return [json.loads(text) for text in texts]

    def snapshot_file(self, event_id: str) -> Path | None:
        """Path of the event's snapshot JPEG, if one was received and is still on disk."""
        with self.store.session() as session:
            relative = session.scalar(select(SnapshotRow.path).where(SnapshotRow.event_id == event_id))
        if relative is None:
            return None
        path = self.snapshot_dir / relative
        return path if path.is_file() else None

    def has_snapshots(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` have a snapshot."""
        if not ids:
            return set()
        with self.store.session() as session:
            return set(session.scalars(select(SnapshotRow.event_id).where(SnapshotRow.event_id.in_(ids))))

    def label_counts(
        self, *, since: datetime | None = None, until: datetime | None = None, by_hour: bool = False
    ) -> list[tuple[str, str, str | None, str, int]]:
        """Event counts as ``(site, node, hour or None, label, count)`` rows; hours and the range are by the hub's
        time of receipt (``received_at``), like every listing."""
        hour = self._hour(EventRow.received_at) if by_hour else None
        columns = [EventRow.site, EventRow.node, EventRow.label]
        group = [*columns, hour] if hour is not None else columns
        conditions = EventFilter(since=since, until=until).conditions()
        with self.store.session() as session:
            rows = session.execute(select(*group, func.count()).where(*conditions).group_by(*group)).all()
        out = []
        for row in rows:
            site, node, label = row[0], row[1], row[2]
            out.append((site, node, row[3] if by_hour else None, label, int(row[-1])))
        return out

    def _hour(self, column: Any) -> Any:
        if self.store.dialect == "postgresql":
            return func.to_char(func.date_trunc("hour", column), 'YYYY-MM-DD"T"HH24:00:00"Z"')
        return func.strftime("%Y-%m-%dT%H:00:00Z", column)
