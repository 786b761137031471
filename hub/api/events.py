"""Routes of stored events: list, CSV export, one event with its raw messages, its snapshot JPEG."""

import csv
import io
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, StreamingResponse

from hub.api.deps import (
    MAX_PAGE,
    EventId,
    LabelQ,
    Limit,
    NodeQ,
    Offset,
    Principal,
    Services,
    Since,
    SiteQ,
    Until,
    aware,
    errors,
)
from hub.views import CSV_COLUMNS, event_csv_row, event_json

router = APIRouter(tags=["events"], responses=errors())


@router.get("/api/events")
def list_events(
    services: Services,
    _: Principal,
    site: SiteQ = None,
    node: NodeQ = None,
    label: LabelQ = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Events, newest first: ``items``, ``total`` matching, and ``next_offset`` (null on the last page)."""
    rows, total = services.events.query(
        site=site, node=node, label=label, since=aware(since), until=aware(until), limit=limit, offset=offset
    )
    snaps = services.events.has_snapshots([r.id for r in rows])
    nxt = offset + len(rows)
    return {
        "items": [event_json(r, r.id in snaps, services.public_url) for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_offset": nxt if nxt < total else None,
    }


@router.get("/api/events.csv", response_class=StreamingResponse)
def events_csv(
    services: Services,
    _: Principal,
    site: SiteQ = None,
    node: NodeQ = None,
    label: LabelQ = None,
    since: Since = None,
    until: Until = None,
) -> StreamingResponse:
    """Every matching event as CSV (one header line, then one line per event, newest first); the parameters
    are checked and the first page read before the first byte is sent, so a bad request gets a 4xx."""
    since, until = aware(since), aware(until)

    def page(offset: int) -> list[Any]:
        return services.events.query(
            site=site, node=node, label=label, since=since, until=until, limit=MAX_PAGE, offset=offset
        )[0]

    first = page(0)

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        offset = 0
        while True:
            rows = first if offset == 0 else page(offset)
            snaps = services.events.has_snapshots([r.id for r in rows])
            writer.writerows(event_csv_row(r, r.id in snaps) for r in rows)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if len(rows) < MAX_PAGE:
                return
            offset += MAX_PAGE

    return StreamingResponse(
        lines(), media_type="text/csv", headers={"Content-Disposition": 'attachment; filename="events.csv"'}
    )


@router.get("/api/events/{event_id}", responses=errors(404))
def get_event(event_id: EventId, services: Services, _: Principal) -> dict[str, Any]:
    """One event with its raw messages."""
    row = services.events.get(event_id)
    if row is None:
        raise HTTPException(404, f"no event {event_id!r}")
    body = event_json(row, bool(services.events.has_snapshots([event_id])), services.public_url)
    body["raw_messages"] = services.events.raw_messages(event_id)
    return body


@router.get("/api/events/{event_id}/snapshot.jpg", response_class=FileResponse, responses=errors(404))
def get_snapshot(event_id: EventId, services: Services, _: Principal) -> FileResponse:
    """The JPEG the node sent for the event."""
    path = services.events.snapshot_file(event_id)
    if path is None:
        raise HTTPException(404, f"no snapshot for event {event_id!r}")
    return FileResponse(path, media_type="image/jpeg")
