"""The ``rejected`` table: payloads that failed validation, bounded, with per-reason counters."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from hub.storage.database import Store
from hub.storage.rows import RejectedRow

#: The ``rejected`` table keeps at most this much of each payload.
KEEP_REJECTED_BYTES = 64 * 1024


@dataclass(frozen=True)
class RejectIn:
    """A payload that failed validation."""

    topic: str
    reason: str
    field: str | None
    error: str
    payload: bytes
    received_at: datetime


def _db_text(text: str) -> str:
    """``text`` without NUL characters, which PostgreSQL text columns cannot hold (a key of a bad payload may)."""
    return text.replace("\x00", "\\x00")


def _rejection_text(rejected: RejectIn) -> str:
    kept = (
        ""
        if len(rejected.payload) <= KEEP_REJECTED_BYTES
        else f" [payload of {len(rejected.payload)} bytes, first {KEEP_REJECTED_BYTES} kept]"
    )
    return _db_text(rejected.error)[: 1024 - len(kept)] + kept


class RejectedStore:
    """Reads and writes the ``rejected`` table and the ``rejected.<reason>`` counters.

    :param store: the database.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, session: Session, rejects: Sequence[RejectIn], max_rows: int) -> None:
        """Count rejections per reason and keep the newest ``max_rows`` payloads."""
        if not rejects:
            return
        counts: dict[str, int] = defaultdict(int)
        for rej in rejects:
            counts[f"rejected.{rej.reason}"] += 1
        self.store.count(session, counts)
        if max_rows <= 0:
            return
        session.execute(
            self.store.insert(RejectedRow),
            [
                {
                    "received_at": r.received_at,
                    "topic": r.topic[:512],
                    "reason": r.reason,
                    "field": _db_text(r.field)[:256] if r.field else None,
                    "error": _rejection_text(r),
                    "payload": r.payload[:KEEP_REJECTED_BYTES],
                }
                for r in rejects[-max_rows:]
            ],
        )
        newest = session.scalar(select(func.max(RejectedRow.id)))
        if newest is not None and newest > max_rows:
            session.execute(delete(RejectedRow).where(RejectedRow.id <= newest - max_rows))

    def recent(self, limit: int = 100) -> list[RejectedRow]:
        """The newest rejected payloads, newest first."""
        with self.store.session() as session:
            return list(session.scalars(select(RejectedRow).order_by(RejectedRow.id.desc()).limit(limit)))

    def counts(self) -> dict[str, int]:
        """Rejections so far by reason."""
        return {name.split(".", 1)[1]: value for name, value in self.store.counters("rejected.").items()}
