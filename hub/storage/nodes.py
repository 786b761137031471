"""The node registry: who is online, last seen, current state, last stats, model version, desired config,
and the node's clock offset from the hub's (measured on its stats).

Fed by the ingest batch (``status`` with its Last Will, ``state``, ``stats``,
and every event as a sign of life), read by the API, the CLI and the commands.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import case, func, select, tuple_, update
from sqlalchemy.orm import Session

from hub.storage.database import Store
from hub.storage.rows import NodeRow

UpdateKind = Literal["status", "state", "stats", "seen"]


@dataclass(frozen=True)
class NodeUpdate:
    """One thing learned about a node: its status, state, stats, or only that it is alive; stats also
    carry the node's clock offset from the hub's (``clock_offset_s``) and whether it is too large."""

    site: str
    node: str
    kind: UpdateKind
    received_at: datetime
    online: bool | None = None
    payload: dict[str, Any] | None = None
    clock_offset_s: float | None = None
    clock_skewed: bool = False


class Registry:
    """Reads and writes the ``nodes`` table.

    :param store: the database.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._statements: dict[str, Any] = {}

    def apply(self, session: Session, updates: Sequence[NodeUpdate]) -> list[tuple[str, str]]:
        """Fold ``updates`` (the last one per node and kind wins) into the table; return the nodes touched."""
        latest: dict[tuple[str, str, str], NodeUpdate] = {}
        for item in updates:
            latest[(item.site, item.node, item.kind)] = item
        by_kind: dict[str, list[NodeUpdate]] = {}
        for (_site, _node, kind), item in latest.items():
            by_kind.setdefault(kind, []).append(item)
        for kind, items in by_kind.items():
            self._upsert(session, kind, items)
        return sorted({(site, node) for site, node, _kind in latest})

    def _upsert(self, session: Session, kind: str, items: list[NodeUpdate]) -> None:
        rows: list[dict[str, Any]] = []
        for item in items:
            row: dict[str, Any] = {
                "site": item.site,
                "node": item.node,
                "last_seen": item.received_at,
                "offline_alerted": False,
                "online": item.online,
                "status_at": item.received_at if kind == "status" else None,
                "state": item.payload if kind == "state" else None,
                "model": (item.payload or {}).get("model") if kind == "state" else None,
                "stats": item.payload if kind == "stats" else None,
                "clock_offset_s": item.clock_offset_s,
                "clock_skewed": item.clock_skewed,
                "clock_skewed_events": 0,
            }
            rows.append(row)
        session.connection().execute(self._statement(kind), rows)

    def _statement(self, kind: str) -> Any:
        """The upsert of one update kind (built once per kind)."""
        if kind not in self._statements:
            table = NodeRow.__table__
            old = table.c
            ins = self.store.insert(table)
            new = ins.excluded
            set_: dict[str, Any] = {"last_seen": new.last_seen}
            if kind == "status":
                changed = old.online.is_(None) | (old.online != new.online)
                set_.update(
                    online=new.online,
                    status_at=case((changed, new.status_at), else_=old.status_at),
                    offline_alerted=case((new.online, False), else_=old.offline_alerted),
                )
            elif kind == "state":
                set_.update(state=new.state, model=new.model)
            elif kind == "stats":
                set_.update(stats=new.stats, clock_offset_s=new.clock_offset_s, clock_skewed=new.clock_skewed)
            self._statements[kind] = ins.on_conflict_do_update(index_elements=[old.site, old.node], set_=set_)
        return self._statements[kind]

    def count_skewed(self, session: Session, counts: Mapping[tuple[str, str], int]) -> None:
        """Add event messages with a skewed clock to each node's ``clock_skewed_events`` (rows exist: every
        node that sent an event was just upserted as ``seen``)."""
        table = NodeRow.__table__
        for (site, node), n in sorted(counts.items()):
            session.execute(
                update(table)
                .where(table.c.site == site, table.c.node == node)
                .values(clock_skewed_events=table.c.clock_skewed_events + n)
            )

    def clock_offsets(self, session: Session, nodes: Iterable[tuple[str, str]]) -> dict[tuple[str, str], float]:
        """The last measured clock offset (``clock_offset_s``) of each of ``nodes`` that has one."""
        table = NodeRow.__table__
        wanted = sorted(set(nodes))
        if not wanted:
            return {}
        rows = session.execute(
            select(table.c.site, table.c.node, table.c.clock_offset_s).where(
                tuple_(table.c.site, table.c.node).in_(wanted), table.c.clock_offset_s.is_not(None)
            )
        )
        return {(site, node): float(offset) for site, node, offset in rows}

    def skew_counts(self) -> list[tuple[str, str, int]]:
        """``(site, node, event messages with a skewed clock)`` rows."""
        with self.store.session() as session:
            return [
                (site, node, int(n))
                for site, node, n in session.execute(
                    select(NodeRow.site, NodeRow.node, NodeRow.clock_skewed_events).order_by(NodeRow.site, NodeRow.node)
                )
            ]

    def nodes(self, site: str | None = None) -> list[NodeRow]:
        """Every known node (of one site), sorted by site and node."""
        with self.store.session() as session:
            stmt = select(NodeRow).order_by(NodeRow.site, NodeRow.node)
            if site:
                stmt = stmt.where(NodeRow.site == site)
            return list(session.scalars(stmt))

    def known(self, site: str, node: str) -> bool:
        """Whether the registry has a row for ``site``/``node``."""
        with self.store.session() as session:
            return session.get(NodeRow, (site, node)) is not None

    def forget(self, site: str, node: str) -> bool:
        """Delete the row of ``site``/``node``; ``False`` when there was none."""
        with self.store.transaction() as session:
            row = session.get(NodeRow, (site, node))
            if row is None:
                return False
            session.delete(row)
            return True

    def counts_by_availability(self) -> list[tuple[bool | None, int]]:
        """``(online, nodes)`` rows (``online`` is ``None`` for a node never heard on ``status``)."""
        with self.store.session() as session:
            return [
                (online, int(n))
                for online, n in session.execute(select(NodeRow.online, func.count()).group_by(NodeRow.online))
            ]

    def claim_overdue(self, session: Session, now: datetime, offline_after_s: float) -> list[NodeRow]:
        """Nodes offline for longer than ``offline_after_s`` not yet alerted; they are marked alerted."""
        cutoff = now - timedelta(seconds=offline_after_s)
        rows = list(
            session.scalars(
                select(NodeRow).where(
                    NodeRow.online.is_(False), NodeRow.status_at < cutoff, NodeRow.offline_alerted.is_(False)
                )
            )
        )
        for row in rows:
            row.offline_alerted = True
        return rows

    def merge_desired(self, site: str, nodes: Sequence[str], changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Merge ``changes`` into the desired config of each of ``nodes`` (one transaction); return the results."""
        merged: dict[str, dict[str, Any]] = {}
        with self.store.transaction() as session:
            for node in nodes:
                row = session.get(NodeRow, (site, node))
                if row is None:
                    row = NodeRow(site=site, node=node, offline_alerted=False)
                    session.add(row)
                row.desired = merged[node] = {**(row.desired or {}), **changes}
        return merged
