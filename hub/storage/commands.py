"""The ``commands`` table: the audit of every command sent to a node and of its answer."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update

from hub.storage.database import Store
from hub.storage.rows import CommandRow

#: ``status`` of an audit row until the answers are in.
PENDING = "pending"


@dataclass(frozen=True)
class AuditAnswer:
    """The final state of one audit row: status name, answer (or answers) and error text."""

    row_id: int
    status: str
    response: dict[str, Any]
    error: str | None
    answered: bool


class CommandAudit:
    """Reads and writes the ``commands`` table.

    :param store: the database.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def record_sent(
        self,
        *,
        request_id: str,
        site: str,
        nodes: Sequence[str],
        name: str,
        payload: dict[str, Any],
        source: str,
        sent_at: datetime,
    ) -> list[int]:
        """One ``pending`` row per node; return their ids in the order of ``nodes``."""
        with self.store.transaction() as session:
            rows = [
                CommandRow(
                    request_id=request_id,
                    site=site,
                    node=node,
                    name=name,
                    payload=payload,
                    source=source[:64],
                    sent_at=sent_at,
                    status=PENDING,
                )
                for node in nodes
            ]
            session.add_all(rows)
            session.flush()
            return [row.id for row in rows]

    def record_answers(self, answers: Sequence[AuditAnswer], now: datetime) -> None:
        """Write the final state of each row."""
        with self.store.transaction() as session:
            for answer in answers:
                session.execute(
                    update(CommandRow)
                    .where(CommandRow.id == answer.row_id)
                    .values(
                        status=answer.status,
                        answered_at=now if answer.answered else None,
                        response=answer.response,
                        error=answer.error[:512] if answer.error else None,
                    )
                )

    def recent(self, limit: int = 100) -> list[CommandRow]:
        """The newest audit rows, newest first."""
        with self.store.session() as session:
            return list(session.scalars(select(CommandRow).order_by(CommandRow.id.desc()).limit(limit)))

    def counts(self) -> list[tuple[str, str, int]]:
        """``(name, status, rows)`` of the whole audit."""
        with self.store.session() as session:
            return [
                (name, status, int(n))
                for name, status, n in session.execute(
                    select(CommandRow.name, CommandRow.status, func.count()).group_by(
                        CommandRow.name, CommandRow.status
                    )
                )
            ]
