"""The JSON shapes of the hub (REST API, CLI ``--json``, live feed, CSV export): the one place they are written.

Each function takes stored rows (or figures) and returns plain ``dict``/``list`` data.

Example::

    >>> compliance(3, 1)
    0.75
    >>> compliance(0, 0) is None
    True
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from hub.urls import snapshot_url

if TYPE_CHECKING:  # annotations only: the CLI imports this module's names without the hub extra
    from hub.storage.events import EventPage
    from hub.storage.rows import AlertRow, CommandRow, EventRow, NodeRow, RejectedRow

#: Columns of ``/api/events.csv``, in order.
CSV_COLUMNS = (
    "id",
    "site",
    "node",
    "label",
    "best_score",
    "first_seen",
    "last_seen",
    "state",
    "messages",
    "mask_score",
    "no_mask_score",
    "angle",
    "snapshot",
    "face_score",
    "received_at",
    "clock_skewed",
)
#: Formats of an event export (``maskwatch events --all``, ``/api/events.<format>``) and their media types.
ExportFormat = Literal["csv", "json", "jsonl"]
EXPORT_MEDIA_TYPES: dict[str, str] = {"csv": "text/csv", "json": "application/json", "jsonl": "application/x-ndjson"}
#: ``online`` of a node row -> its availability name.
AVAILABILITY = {True: "online", False: "offline", None: "unknown"}


def event_json(row: EventRow, has_snapshot: bool, base_url: str) -> dict[str, Any]:
    """The public JSON form of an event: ``first_seen``/``last_seen``/``ended_at`` are the node's clock,
    ``received_at`` the hub's (listings are ordered by it), ``clock_skewed`` whether the two disagreed."""
    return {
        "id": row.id,
        "site": row.site,
        "node": row.node,
        "label": row.label,
        "best_score": row.best_score,
        "mask_score": row.mask_score,
        "no_mask_score": row.no_mask_score,
        "face_score": row.face_score,
        "first_seen": row.first_seen.isoformat(),
        "last_seen": row.last_seen.isoformat(),
        "ended_at": row.ended_at.isoformat() if row.ended_at else None,
        "received_at": row.received_at.isoformat(),
        "clock_skewed": row.clock_skewed,
        "state": row.state,
        "messages": row.messages,
        "box": row.box,
        "angle": row.angle,
        "frames": row.frames,
        "snapshot_url": snapshot_url(base_url, row.id) if has_snapshot else None,
    }


def event_csv_row(row: EventRow, has_snapshot: bool) -> list[Any]:
    """One line of ``/api/events.csv`` (:data:`CSV_COLUMNS`)."""
    return [
        row.id,
        row.site,
        row.node,
        row.label,
        row.best_score,
        row.first_seen.isoformat(),
        row.last_seen.isoformat(),
        row.state,
        row.messages,
        row.mask_score,
        row.no_mask_score,
        row.angle,
        int(has_snapshot),
        row.face_score,
        row.received_at.isoformat(),
        int(row.clock_skewed),
    ]


def export_events(pages: Iterable[EventPage], fmt: ExportFormat, base_url: str) -> Iterator[str]:
    """An event export as text chunks, one per page, so it streams in constant memory: ``csv`` (a header line,
    then :func:`event_csv_row` lines), ``json`` (one array of :func:`event_json` objects, one per line) or
    ``jsonl`` (one :func:`event_json` object per line)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if fmt == "csv":
        writer.writerow(CSV_COLUMNS)
    elif fmt == "json":
        buffer.write("[")
    separator = "\n"
    for page in pages:
        if fmt == "csv":
            writer.writerows(event_csv_row(row, row.id in page.snapshots) for row in page.rows)
        else:
            for row in page.rows:
                item = json.dumps(event_json(row, row.id in page.snapshots, base_url))
                if fmt == "jsonl":
                    buffer.write(item + "\n")
                else:
                    buffer.write(separator + item)
                    separator = ",\n"
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    if fmt == "json":
        buffer.write("\n]\n" if separator != "\n" else "]\n")
    yield buffer.getvalue()


def event_feed_json(row: EventRow) -> dict[str, Any]:
    """The ``event`` item of the live feed (``/api/stream``)."""
    return {
        "id": row.id,
        "site": row.site,
        "node": row.node,
        "label": row.label,
        "score": row.best_score,
        "state": row.state,
        "last_seen": row.last_seen.isoformat(),
        "received_at": row.received_at.isoformat(),
        "clock_skewed": row.clock_skewed,
    }


def camera_health(state: dict[str, Any] | None, stats: dict[str, Any] | None) -> tuple[bool | None, str | None]:
    """``(camera_ok, camera_error)`` from the newer (by the node's ``ts``) of its stored state and stats that says;
    ``(None, None)`` when neither does.

    >>> camera_health({"ts": "2026-01-01T12:00:05Z", "camera_ok": False, "camera_error": "no frame for 10 s"},
    ...               {"ts": "2026-01-01T12:00:00Z", "camera_ok": True})
    (False, 'no frame for 10 s')
    >>> camera_health(None, {"ts": "2026-01-01T12:00:00Z", "camera_ok": True})
    (True, None)
    """
    said = [p for p in (state, stats) if p and isinstance(p.get("camera_ok"), bool) and isinstance(p.get("ts"), str)]
    if not said:
        return None, None
    newest = max(said, key=lambda p: datetime.fromisoformat(p["ts"]))
    return newest["camera_ok"], newest.get("camera_error")


def node_json(row: NodeRow) -> dict[str, Any]:
    """The public JSON form of a registry entry; ``clock_offset_s`` is the node's clock minus the hub's at its
    last stats message, ``clock_skewed`` whether that exceeds ``clock.max_skew_s``."""
    camera_ok, camera_error = camera_health(row.state, row.stats)
    return {
        "site": row.site,
        "node": row.node,
        "status": AVAILABILITY[row.online],
        "status_at": row.status_at.isoformat() if row.status_at else None,
        "last_seen": row.last_seen.isoformat() if row.last_seen else None,
        "model": row.model,
        "camera_ok": camera_ok,
        "camera_error": camera_error,
        "state": row.state,
        "stats": row.stats,
        "desired": row.desired,
        "clock_offset_s": None if row.clock_offset_s is None else round(row.clock_offset_s, 3),
        "clock_skewed": row.clock_skewed,
        "clock_skewed_events": row.clock_skewed_events,
    }


def alert_json(row: AlertRow) -> dict[str, Any]:
    """The public JSON form of a stored alert."""
    return {
        "kind": row.kind,
        "site": row.site,
        "node": row.node,
        "ts": row.ts.isoformat(),
        "event_id": row.event_id,
        "score": row.score,
        "snapshot_url": row.snapshot_url,
        "message": row.message,
    }


def command_json(row: CommandRow) -> dict[str, Any]:
    """The public JSON form of a command audit row."""
    return {
        "request_id": row.request_id,
        "site": row.site,
        "node": row.node,
        "name": row.name,
        "payload": row.payload,
        "source": row.source,
        "sent_at": row.sent_at.isoformat(),
        "status": row.status,
        "answered_at": row.answered_at.isoformat() if row.answered_at else None,
        "response": row.response,
        "error": row.error,
    }


def rejected_json(row: RejectedRow) -> dict[str, Any]:
    """The public JSON form of a rejected payload (hex of its first 256 bytes)."""
    return {
        "received_at": row.received_at.isoformat(),
        "topic": row.topic,
        "reason": row.reason,
        "field": row.field,
        "error": row.error,
        "size": len(row.payload),
        "head_hex": row.payload[:256].hex(),
    }


def compliance(mask: int, no_mask: int) -> float | None:
    """Share of faces wearing a mask, or ``None`` without faces."""
    total = mask + no_mask
    return round(mask / total, 4) if total else None


def stats_json(
    since: datetime,
    until: datetime,
    label_counts: Iterable[tuple[str, str, str | None, str, int]],
    rejected: dict[str, int],
    ingest: dict[str, Any] | None,
) -> dict[str, Any]:
    """``/api/stats``: compliance overall, per node, per hour and per node and hour, from ``(site, node, hour,
    label, count)`` rows."""
    per_node: dict[tuple[str, str], dict[str, int]] = {}
    per_hour: dict[str, dict[str, int]] = {}
    per_node_hour: dict[tuple[str, str, str], dict[str, int]] = {}
    for site, node, hour, label, n in label_counts:
        per_node.setdefault((site, node), {"mask": 0, "no_mask": 0})[label] += n
        per_hour.setdefault(hour or "", {"mask": 0, "no_mask": 0})[label] += n
        per_node_hour.setdefault((site, node, hour or ""), {"mask": 0, "no_mask": 0})[label] += n
    mask = sum(c["mask"] for c in per_node.values())
    no_mask = sum(c["no_mask"] for c in per_node.values())
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "faces": mask + no_mask,
        "mask": mask,
        "no_mask": no_mask,
        "compliance": compliance(mask, no_mask),
        "per_node": [
            {"site": s, "node": n, **c, "compliance": compliance(c["mask"], c["no_mask"])}
            for (s, n), c in sorted(per_node.items())
        ],
        "per_hour": [
            {"hour": h, **c, "compliance": compliance(c["mask"], c["no_mask"])} for h, c in sorted(per_hour.items())
        ],
        "per_node_hour": [
            {"site": s, "node": n, "hour": h, **c, "compliance": compliance(c["mask"], c["no_mask"])}
            for (s, n, h), c in sorted(per_node_hour.items())
        ],
        "rejected": rejected,
        "ingest": ingest,
    }
