"""The hub's database schema: SQLAlchemy 2.0 typed ORM models.

Times are stored as naive UTC (:class:`UtcDateTime`) and read back aware, so
SQLite and PostgreSQL behave the same. The schema is created and upgraded by the
Alembic migrations in :mod:`hub.migrations`, never by ``create_all``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as naive UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else _naive_utc(value)

    def bind_processor(self, dialect: Dialect) -> Callable[[datetime | None], Any] | None:
        """On SQLite, the text SQLAlchemy would store, made in one step (the ingest binds thousands a second).

        A batch binds each event time and the receive time several times, so recent texts are remembered.
        """
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        texts: dict[int, tuple[datetime, str]] = {}  # id(value) -> (value, text); entries are never changed

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            known = texts.get(id(value))
            if known is not None and known[0] is value:
                return known[1]
            if len(texts) >= 8192:
                texts.clear()
            text = _naive_utc(value).isoformat(" ", "microseconds")
            texts[id(value)] = (value, text)
            return text

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def _naive_utc(value: datetime) -> datetime:
    offset = value.utcoffset()
    if offset is None:
        raise ValueError(f"naive datetime {value!r}: give a timezone")
    return value.replace(tzinfo=None) - offset if offset else value.replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base of every hub table."""

    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON(), bytes: LargeBinary()}

    if TYPE_CHECKING:  # every hub row class maps one Table (SQLAlchemy declares the wider FromClause)
        __table__: ClassVar[Table]


class EventRow(Base):
    """One tracked face: every ``new``/``update``/``end`` message of one id folded into its lifecycle."""

    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(64))
    first_seen: Mapped[datetime] = mapped_column(index=True)
    last_seen: Mapped[datetime]
    label: Mapped[str] = mapped_column(String(16), index=True, comment="label of the latest message")
    best_score: Mapped[float] = mapped_column(Float, comment="highest score of the final label")
    mask_score: Mapped[float | None] = mapped_column(Float, comment="highest 'mask' score seen")
    no_mask_score: Mapped[float | None] = mapped_column(Float, comment="highest 'no_mask' score seen")
    face_score: Mapped[float | None] = mapped_column(Float, comment="face verification score of the latest message")
    box: Mapped[list[int]] = mapped_column(JSON, comment="[x, y, w, h] of the latest message")
    angle: Mapped[float | None] = mapped_column(Float)
    frames: Mapped[int | None] = mapped_column(Integer)
    started: Mapped[bool] = mapped_column(Boolean, comment="the 'new' message was received")
    ended_at: Mapped[datetime | None] = mapped_column(comment="time of the 'end' message")
    messages: Mapped[int] = mapped_column(Integer, comment="distinct messages received")
    snapshot_expected: Mapped[bool] = mapped_column(Boolean, default=False)
    alerted: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[datetime] = mapped_column(
        index=True, comment="when the hub first stored it (hub clock): the event's time for listings and pruning"
    )
    updated_at: Mapped[datetime]
    clock_skewed: Mapped[bool] = mapped_column(
        Boolean,
        default=False,
        server_default=false(),
        comment="a message's ts differed from the hub's clock by more than clock.max_skew_s",
    )

    __table_args__ = (Index("ix_events_site_node_first_seen", "site", "node", "first_seen"),)

    @property
    def state(self) -> str:
        """``ended`` once the ``end`` message arrived, else ``open``."""
        return "ended" if self.ended_at is not None else "open"


class EventMessage(Base):
    """A raw event message as received; ``digest`` (SHA-256 of its bytes) makes it unique: the idempotency key."""

    __tablename__ = "event_messages"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    event_id: Mapped[str] = mapped_column(String(128), index=True)
    type: Mapped[str] = mapped_column(String(8))
    ts: Mapped[datetime]
    label: Mapped[str] = mapped_column(String(16))
    score: Mapped[float] = mapped_column(Float)
    payload: Mapped[str] = mapped_column(Text, comment="the JSON exactly as received")
    received_at: Mapped[datetime]


class SnapshotRow(Base):
    """A JPEG received on ``.../snapshot/<event id>``, stored on disk at ``path`` (relative to snapshot_dir)."""

    __tablename__ = "snapshots"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    site: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(Integer)
    received_at: Mapped[datetime] = mapped_column(index=True)


class NodeRow(Base):
    """A node of a site, as last reported on its ``status``, ``state`` and ``stats`` topics."""

    __tablename__ = "nodes"

    site: Mapped[str] = mapped_column(String(64), primary_key=True)
    node: Mapped[str] = mapped_column(String(64), primary_key=True)
    online: Mapped[bool | None] = mapped_column(Boolean)
    status_at: Mapped[datetime | None] = mapped_column(comment="when online/offline last changed")
    last_seen: Mapped[datetime | None]
    state: Mapped[dict[str, Any] | None]
    stats: Mapped[dict[str, Any] | None]
    model: Mapped[str | None] = mapped_column(String(128))
    desired: Mapped[dict[str, Any] | None] = mapped_column(comment="desired config, published retained")
    offline_alerted: Mapped[bool] = mapped_column(Boolean, default=False)
    clock_offset_s: Mapped[float | None] = mapped_column(
        Float, comment="node clock minus hub clock at its last stats message, seconds"
    )
    clock_skewed: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false(), comment="|clock_offset_s| exceeds clock.max_skew_s"
    )
    clock_skewed_events: Mapped[int] = mapped_column(
        BigInteger, default=0, server_default="0", comment="event messages whose ts was off the hub's clock"
    )


class AlertRow(Base):
    """An alert the hub published on ``maskwatch/<site>/alerts``."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    site: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(64))
    ts: Mapped[datetime] = mapped_column(index=True)
    event_id: Mapped[str | None] = mapped_column(String(128))
    score: Mapped[float | None] = mapped_column(Float)
    snapshot_url: Mapped[str | None] = mapped_column(String(512))
    message: Mapped[str | None] = mapped_column(String(512))


class CommandRow(Base):
    """Audit of one command to one node (or to ``all`` nodes of a site) and its answer."""

    __tablename__ = "commands"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(128), index=True)
    site: Mapped[str] = mapped_column(String(64))
    node: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]]
    source: Mapped[str] = mapped_column(String(64), comment="cli, api:<token name>...")
    sent_at: Mapped[datetime] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(8), comment="ok, error or timeout")
    answered_at: Mapped[datetime | None]
    response: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(String(512))


class RejectedRow(Base):
    """A payload that failed validation, with its raw bytes (the table is bounded)."""

    __tablename__ = "rejected"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    received_at: Mapped[datetime] = mapped_column(index=True)
    topic: Mapped[str] = mapped_column(String(512))
    reason: Mapped[str] = mapped_column(String(16))
    field: Mapped[str | None] = mapped_column(String(256))
    error: Mapped[str] = mapped_column(String(1024))
    payload: Mapped[bytes]


class CounterRow(Base):
    """A monotonic counter (e.g. ``rejected.schema``), shared by every hub on the database."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger)
