"""Alerts: one per ``no_mask`` event (per-node cooldown) and one per node offline for too long.

Alerts are stored in the ingest transaction and published on
``maskwatch/<site>/alerts`` (QoS 1) once it is committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row
from sqlalchemy.orm import Session

from hub.storage.alerts import AlertStore
from hub.storage.rows import NodeRow
from hub.urls import snapshot_url
from shared import topics
from shared.messages import Alert

log = logging.getLogger(__name__)

Publish = Callable[[str, Alert], object]  # what it returns is not used


class Alerter:
    """Decides, stores and publishes alerts.

    :param publish: sends one alert to a topic (the hub's MQTT client), or ``None`` to only store.
    :param cooldown_s: per node, ``no_mask`` alerts closer together than this are suppressed.
    :param public_url: base of the snapshot links, e.g. ``http://hub:8080``.
    :param min_face_score: ``no_mask`` events with a lower face score raise no alert (``None``: off); applied
        when events are claimed (:meth:`hub.storage.events.EventLog.claim_no_mask`).
    """

    def __init__(
        self, publish: Publish | None, *, cooldown_s: float, public_url: str, min_face_score: float | None = None
    ) -> None:
        self._publish = publish
        self.cooldown_s = cooldown_s
        self.min_face_score = min_face_score
        self.public_url = public_url.rstrip("/")
        self._last: dict[tuple[str, str], datetime] | None = None
        self.suppressed = 0
        self.published = 0

    def _last_alerts(self, session: Session) -> dict[tuple[str, str], datetime]:
        if self._last is None:  # resume cooldowns after a restart
            self._last = AlertStore.latest_no_mask(session)
        return self._last

    def for_events(self, session: Session, rows: Sequence[Row[Any]], now: datetime) -> list[Alert]:
        """Alerts for newly ``no_mask`` events (rows of :meth:`hub.storage.events.EventLog.claim_no_mask`),
        except those within the node's cooldown."""
        last = self._last_alerts(session)
        out: list[Alert] = []
        for row in rows:
            key = (row.site, row.node)
            previous = last.get(key)
            if previous is not None and (now - previous).total_seconds() < self.cooldown_s:
                self.suppressed += 1
                continue
            last[key] = now
            out.append(
                Alert(
                    kind="no_mask",
                    site=row.site,
                    node=row.node,
                    ts=now,
                    event_id=row.id,
                    score=row.best_score,
                    snapshot_url=snapshot_url(self.public_url, row.id) if row.snapshot_expected else None,
                )
            )
        AlertStore.add(session, out)
        return out

    def for_offline(self, session: Session, rows: Sequence[NodeRow], now: datetime) -> list[Alert]:
        """Alerts for nodes offline too long."""
        out = [
            Alert(
                kind="node_offline",
                site=row.site,
                node=row.node,
                ts=now,
                message=f"offline since {row.status_at.isoformat() if row.status_at else 'unknown'}",
            )
            for row in rows
        ]
        AlertStore.add(session, out)
        return out

    def publish(self, alerts: Sequence[Alert]) -> None:
        """Publish committed alerts (call after the transaction that stored them)."""
        if self._publish is None:
            return
        for alert in alerts:
            self._publish(topics.alerts(alert.site), alert)
            self.published += 1
            log.info("alert %s for %s/%s (event %s)", alert.kind, alert.site, alert.node, alert.event_id)
