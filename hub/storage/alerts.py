"""The ``alerts`` table: alerts the hub published, the cooldown state they imply, counts for ``/metrics``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.storage.database import Store
from hub.storage.rows import AlertRow
from shared.messages import Alert


class AlertStore:
    """Reads and writes the ``alerts`` table.

    :param store: the database.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def latest_no_mask(session: Session) -> dict[tuple[str, str], datetime]:
        """Time of the newest ``no_mask`` alert per ``(site, node)`` (cooldowns resume from it after a restart)."""
        rows = session.execute(
            select(AlertRow.site, AlertRow.node, func.max(AlertRow.ts))
            .where(AlertRow.kind == "no_mask")
            .group_by(AlertRow.site, AlertRow.node)
        )
        return {(site, node): ts for site, node, ts in rows}

    @staticmethod
    def add(session: Session, alerts: Sequence[Alert]) -> None:
        """Store ``alerts`` in the caller's transaction."""
        session.add_all(
            AlertRow(
                kind=alert.kind,
                site=alert.site,
                node=alert.node,
                ts=alert.ts,
                event_id=alert.event_id,
                score=alert.score,
                snapshot_url=alert.snapshot_url,
                message=alert.message,
            )
            for alert in alerts
        )

    def recent(self, *, site: str | None = None, limit: int = 100) -> list[AlertRow]:
        """The newest stored alerts (of one site), newest first."""
        stmt = select(AlertRow).order_by(AlertRow.ts.desc(), AlertRow.id.desc()).limit(limit)
        if site:
            stmt = stmt.where(AlertRow.site == site)
        with self.store.session() as session:
            return list(session.scalars(stmt))

    def counts_by_kind(self) -> list[tuple[str, int]]:
        """``(kind, stored alerts)`` rows."""
        with self.store.session() as session:
            return [
                (kind, int(n))
                for kind, n in session.execute(select(AlertRow.kind, func.count()).group_by(AlertRow.kind))
            ]
