"""Routes of stored events: list, export (CSV, JSON, JSON lines), one event with its raw messages, its snapshot JPEG."""

import itertools
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import FileResponse, StreamingResponse

from hub.api.deps import (
    MAX_OFFSET,
    MAX_PAGE,
    EventFilterQ,
    EventId,
    Limit,
    Offset,
    Principal,
    Services,
    errors,
)
from hub.views import EXPORT_MEDIA_TYPES, ExportFormat, event_json, export_events

router = APIRouter(tags=["events"], responses=errors())


@router.get("/api/events")
def list_events(
    services: Services,
    _: Principal,
    where: EventFilterQ,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Events, newest first: ``items``, ``total`` matching, and ``next_offset`` (null on the last page)."""
    rows, total = services.events.query(where, limit=limit, offset=offset)
    snaps = services.events.has_snapshots([r.id for r in rows])
    nxt = offset + len(rows)
    return {
        "items": [event_json(r, r.id in snaps, services.public_url) for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_offset": nxt if nxt < total else None,
    }


@router.get("/api/events.{fmt}", response_class=StreamingResponse)
def export_events_route(
    fmt: ExportFormat,
    services: Services,
    _: Principal,
    where: EventFilterQ,
    limit: Annotated[
        int | None, Query(ge=1, le=MAX_OFFSET, description="at most this many events (default: all)")
    ] = None,
) -> StreamingResponse:
    """Every matching event (or the first ``limit``), newest first, as ``csv`` (a header line, then one line per
    event), ``json`` (one array) or ``jsonl`` (one object per line): read a page at a time (keyset paging), so
    any number of events streams in constant memory. The parameters are checked and the first page read before
    the first byte is sent, so a bad request gets a 4xx."""
    pages = services.events.pages(where, page_size=MAX_PAGE, limit=limit)
    first = next(pages, None)
    chunks = export_events(itertools.chain([first] if first else [], pages), fmt, services.public_url)
    return StreamingResponse(
        chunks,
        media_type=EXPORT_MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="events.{fmt}"'},
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
