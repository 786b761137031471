"""The REST API of the hub (FastAPI; OpenAPI at ``/openapi.json``, docs at ``/docs``).

Routes (people script against them; keep them stable)::

    GET  /api/events                 filters site, node, label, since, until; limit/offset pagination
    GET  /api/events.csv             the same filters, every matching row
    GET  /api/events/{id}            one event with its raw messages
    GET  /api/events/{id}/snapshot.jpg
    GET  /api/nodes                  registry: online, last seen, state, stats, model, desired config
    GET  /api/stats                  compliance (share of faces with masks) per node and per hour
    POST /api/nodes/{site}/{node}/commands/{name}   node 'all' = every node of the site
    GET  /api/alerts, /api/commands, /api/rejected
    GET  /api/stream                 Server-Sent Events: event, node, alert
    GET  /metrics                    Prometheus text
    GET  /healthz

Every route but ``/healthz`` and ``/metrics`` (each configurable public) needs a
bearer token when ``auth.tokens`` is set; refused requests get 401 and no data.
Command routes are rate-limited per token (429 with ``Retry-After``).
The dashboard (:mod:`hub.web`) is served at ``/`` when its ``static`` folder is present.
"""

# No `from __future__ import annotations`: FastAPI must see the dependency aliases built in create_app.
import asyncio
import csv
import io
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select, text

from hub import metrics
from hub.auth import RateLimiter, TokenChecker
from hub.commands import Commander, exit_code
from hub.config import HubConfig
from hub.events import EventLog
from hub.feed import Feed
from hub.ingest import Ingest
from hub.models import AlertRow, CommandRow, EventRow, NodeRow, RejectedRow
from hub.registry import Registry
from hub.store import Store
from shared.errors import ContractError
from shared.messages import utc_now

log = logging.getLogger(__name__)

WEB_STATIC = Path(__file__).parent / "web" / "static"
CSV_COLUMNS = ("id", "site", "node", "label", "best_score", "first_seen", "last_seen", "state", "messages",
               "mask_score", "no_mask_score", "angle", "snapshot", "face_score")
MAX_PAGE = 1000
STATUS_OF_EXIT = {0: 200, 1: 502, 3: 504}


@dataclass
class HubServices:
    """What the API reads and drives; ``commander``/``ingest`` are absent in a read-only API."""

    config: HubConfig
    store: Store
    events: EventLog
    registry: Registry
    feed: Feed = field(default_factory=Feed)
    commander: Commander | None = None
    ingest: Ingest | None = None
    mqtt_connected: Callable[[], bool] | None = None
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def public_url(self) -> str:
        http = self.config.http
        return (http.public_url or f"http://{http.host}:{http.port}").rstrip("/")


def event_json(row: EventRow, has_snapshot: bool, base_url: str) -> dict[str, Any]:
    """The public JSON form of an event."""
    return {
        "id": row.id, "site": row.site, "node": row.node, "label": row.label, "best_score": row.best_score,
        "mask_score": row.mask_score, "no_mask_score": row.no_mask_score, "face_score": row.face_score,
        "first_seen": row.first_seen.isoformat(), "last_seen": row.last_seen.isoformat(),
        "ended_at": row.ended_at.isoformat() if row.ended_at else None, "state": row.state,
        "messages": row.messages, "box": row.box, "angle": row.angle, "frames": row.frames,
        "snapshot_url": f"{base_url}/api/events/{row.id}/snapshot.jpg" if has_snapshot else None,
    }


def node_json(row: NodeRow) -> dict[str, Any]:
    """The public JSON form of a registry entry."""
    return {
        "site": row.site, "node": row.node,
        "status": {True: "online", False: "offline", None: "unknown"}[row.online],
        "status_at": row.status_at.isoformat() if row.status_at else None,
        "last_seen": row.last_seen.isoformat() if row.last_seen else None,
        "model": row.model, "state": row.state, "stats": row.stats, "desired": row.desired,
    }


def compliance(mask: int, no_mask: int) -> float | None:
    """Share of faces wearing a mask, or ``None`` without faces."""
    total = mask + no_mask
    return round(mask / total, 4) if total else None


def create_app(services: HubServices) -> FastAPI:
    """The FastAPI application over ``services``."""
    cfg = services.config
    checker = TokenChecker(cfg.auth)
    limiter = RateLimiter(cfg.auth.command_rate_per_min)
    app = FastAPI(title="Maskwatch hub", version="1", description=__doc__)

    bearer = HTTPBearer(auto_error=False, description="an API token (maskwatch hub --new-token NAME)")

    def principal(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        token = credentials.credentials.strip() if credentials else None
        if not token and request.url.path == "/api/stream":
            token = request.query_params.get("access_token")
        name = checker.identify(token)
        if name is None:
            raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
        return name

    def optional_principal(public: bool) -> Callable[..., str]:
        def check(request: Request,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
            return "public" if public else principal(request, credentials)
        return check

    Principal = Annotated[str, Depends(principal)]

    def rate_limited(request: Request, who: Principal) -> str:
        key = who if checker.enabled else f"ip:{request.client.host if request.client else '?'}"
        wait = limiter.take(key)
        if wait > 0:
            raise HTTPException(429, f"too many commands: retry in {wait:.0f} s",
                                headers={"Retry-After": str(max(1, round(wait)))})
        return who

    Since = Annotated[datetime | None, Query(description="ISO 8601; events first seen at or after")]
    Until = Annotated[datetime | None, Query(description="ISO 8601; events first seen before")]
    LabelQ = Annotated[Literal["mask", "no_mask"] | None, Query()]

    def aware(value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise HTTPException(422, "give times with a timezone, e.g. 2026-01-01T12:00:00Z")
        return value

    @app.get("/healthz", tags=["ops"])
    def healthz(_: Annotated[str, Depends(optional_principal(cfg.auth.public_healthz))]) -> JSONResponse:
        """Liveness: the database answers (503 if not); MQTT and ingest figures for information."""
        try:
            with services.store.session() as session:
                session.execute(text("SELECT 1"))
            db_ok = True
        except Exception as exc:  # report any database failure as unhealthy
            log.warning("health check: database error: %s", exc)
            db_ok = False
        body = {"status": "ok" if db_ok else "error", "database": db_ok,
                "mqtt": services.mqtt_connected() if services.mqtt_connected else None,
                "ingest_depth": services.ingest.depth if services.ingest else None}
        return JSONResponse(body, status_code=200 if db_ok else 503)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    def metrics_page(_: Annotated[str, Depends(optional_principal(cfg.auth.public_metrics))]) -> PlainTextResponse:
        """Prometheus text exposition."""
        return PlainTextResponse(metrics.render(services.store, services.ingest, services.feed),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/api/events", tags=["events"])
    def list_events(_: Principal, site: str | None = None, node: str | None = None, label: LabelQ = None,
                    since: Since = None, until: Until = None,
                    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
                    offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
        """Events, newest first: ``items``, ``total`` matching, and ``next_offset`` (null on the last page)."""
        rows, total = services.events.query(site=site, node=node, label=label, since=aware(since),
                                            until=aware(until), limit=limit, offset=offset)
        snaps = services.events.has_snapshots([r.id for r in rows])
        nxt = offset + len(rows)
        return {"items": [event_json(r, r.id in snaps, services.public_url) for r in rows], "total": total,
                "limit": limit, "offset": offset, "next_offset": nxt if nxt < total else None}

    @app.get("/api/events.csv", tags=["events"], response_class=StreamingResponse)
    def events_csv(_: Principal, site: str | None = None, node: str | None = None, label: LabelQ = None,
                   since: Since = None, until: Until = None) -> StreamingResponse:
        """Every matching event as CSV (one header line, then one line per event, newest first)."""
        since, until = aware(since), aware(until)

        def lines() -> Iterator[str]:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(CSV_COLUMNS)
            offset = 0
            while True:
                rows, _total = services.events.query(site=site, node=node, label=label, since=since,
                                                     until=until, limit=MAX_PAGE, offset=offset)
                snaps = services.events.has_snapshots([r.id for r in rows])
                for r in rows:
                    writer.writerow([r.id, r.site, r.node, r.label, r.best_score, r.first_seen.isoformat(),
                                     r.last_seen.isoformat(), r.state, r.messages, r.mask_score, r.no_mask_score,
                                     r.angle, int(r.id in snaps), r.face_score])
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
                if len(rows) < MAX_PAGE:
                    return
                offset += MAX_PAGE

        return StreamingResponse(lines(), media_type="text/csv",
                                 headers={"Content-Disposition": 'attachment; filename="events.csv"'})

    @app.get("/api/events/{event_id}", tags=["events"])
    def get_event(event_id: str, _: Principal) -> dict[str, Any]:
        """One event with its raw messages."""
        row = services.events.get(event_id)
        if row is None:
            raise HTTPException(404, f"no event {event_id!r}")
        body = event_json(row, bool(services.events.has_snapshots([event_id])), services.public_url)
        body["raw_messages"] = services.events.raw_messages(event_id)
        return body

    @app.get("/api/events/{event_id}/snapshot.jpg", tags=["events"], response_class=FileResponse)
    def get_snapshot(event_id: str, _: Principal) -> FileResponse:
        """The JPEG the node sent for the event."""
        path = services.events.snapshot_file(event_id)
        if path is None:
            raise HTTPException(404, f"no snapshot for event {event_id!r}")
        return FileResponse(path, media_type="image/jpeg")

    @app.get("/api/nodes", tags=["nodes"])
    def list_nodes(_: Principal, site: str | None = None) -> list[dict[str, Any]]:
        """Every known node."""
        return [node_json(row) for row in services.registry.nodes(site)]

    @app.get("/api/stats", tags=["events"])
    def stats(_: Principal, since: Since = None, until: Until = None) -> dict[str, Any]:
        """Compliance (share of faces with masks) overall, per node, per hour and per node and hour (UTC hours;
        default: last 24 h)."""
        until_ = aware(until) or utc_now()
        since_ = aware(since) or until_ - timedelta(hours=24)
        per_node: dict[tuple[str, str], dict[str, int]] = {}
        per_hour: dict[str, dict[str, int]] = {}
        per_node_hour: dict[tuple[str, str, str], dict[str, int]] = {}
        for site, node, hour, label, n in services.events.label_counts(since=since_, until=until_, by_hour=True):
            per_node.setdefault((site, node), {"mask": 0, "no_mask": 0})[label] += n
            per_hour.setdefault(hour or "", {"mask": 0, "no_mask": 0})[label] += n
            per_node_hour.setdefault((site, node, hour or ""), {"mask": 0, "no_mask": 0})[label] += n
        mask = sum(c["mask"] for c in per_node.values())
        no_mask = sum(c["no_mask"] for c in per_node.values())
        return {
            "since": since_.isoformat(), "until": until_.isoformat(),
            "faces": mask + no_mask, "mask": mask, "no_mask": no_mask, "compliance": compliance(mask, no_mask),
            "per_node": [{"site": s, "node": n, **c, "compliance": compliance(c["mask"], c["no_mask"])}
                         for (s, n), c in sorted(per_node.items())],
            "per_hour": [{"hour": h, **c, "compliance": compliance(c["mask"], c["no_mask"])}
                         for h, c in sorted(per_hour.items())],
            "per_node_hour": [{"site": s, "node": n, "hour": h, **c, "compliance": compliance(c["mask"], c["no_mask"])}
                              for (s, n, h), c in sorted(per_node_hour.items())],
            "rejected": services.store.counters("rejected."),
            "ingest": None if services.ingest is None else {
                "received": services.ingest.stats.received, "committed": services.ingest.stats.committed,
                "batches": services.ingest.stats.batches, "duplicates": services.ingest.stats.duplicates,
                "queue_depth": services.ingest.depth, "rejected": dict(services.ingest.stats.rejected)},
        }

    @app.post("/api/nodes/{site}/{node}/commands/{name}", tags=["nodes"])
    def command(site: str, node: str, name: Literal["servo", "threshold", "detect", "snapshot"],
                who: Annotated[str, Depends(rate_limited)],
                params: Annotated[dict[str, Any] | None, Body(description="command fields, e.g. {\"value\": 0.6}")]
                = None,
                timeout_s: Annotated[float | None, Query(gt=0, le=60)] = None) -> JSONResponse:
        """Send a command to a node, to a comma-separated list of nodes, or to ``all`` nodes of the site,
        and wait for the answers.

        200 when every node answered ok, 502 when one answered ``error``, 504 when one did not answer.
        """
        if services.commander is None:
            raise HTTPException(503, "this API has no MQTT connection to send commands")
        try:
            outcomes = services.commander.send(site, None if node == "all" else node.split(","), name,
                                               params or {}, source=f"api:{who}", timeout_s=timeout_s)
        except ContractError as exc:
            raise HTTPException(422, str(exc)) from None
        body = {"request_id": outcomes[0].request_id, "results": [o.as_dict() for o in outcomes]}
        return JSONResponse(body, status_code=STATUS_OF_EXIT[exit_code(outcomes)])

    @app.get("/api/alerts", tags=["nodes"])
    def list_alerts(_: Principal, site: str | None = None,
                    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100) -> list[dict[str, Any]]:
        """The newest alerts."""
        with services.store.session() as session:
            stmt = select(AlertRow).order_by(AlertRow.ts.desc(), AlertRow.id.desc()).limit(limit)
            rows = session.scalars(stmt.where(AlertRow.site == site) if site else stmt)
            return [{"kind": r.kind, "site": r.site, "node": r.node, "ts": r.ts.isoformat(), "event_id": r.event_id,
                     "score": r.score, "snapshot_url": r.snapshot_url, "message": r.message} for r in rows]

    @app.get("/api/commands", tags=["nodes"])
    def list_commands(_: Principal, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100) -> list[dict[str, Any]]:
        """The command audit, newest first."""
        with services.store.session() as session:
            rows = session.scalars(select(CommandRow).order_by(CommandRow.id.desc()).limit(limit))
            return [{"request_id": r.request_id, "site": r.site, "node": r.node, "name": r.name,
                     "payload": r.payload, "source": r.source, "sent_at": r.sent_at.isoformat(), "status": r.status,
                     "answered_at": r.answered_at.isoformat() if r.answered_at else None, "response": r.response,
                     "error": r.error} for r in rows]

    @app.get("/api/rejected", tags=["ops"])
    def list_rejected(_: Principal, limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100) -> dict[str, Any]:
        """Rejection counts by reason and the newest rejected payloads (hex of the first 256 bytes)."""
        with services.store.session() as session:
            rows = session.scalars(select(RejectedRow).order_by(RejectedRow.id.desc()).limit(limit))
            items = [{"received_at": r.received_at.isoformat(), "topic": r.topic, "reason": r.reason,
                      "field": r.field, "error": r.error, "size": len(r.payload), "head_hex": r.payload[:256].hex()}
                     for r in rows]
        return {"counts": {k.split(".", 1)[1]: v for k, v in services.store.counters("rejected.").items()},
                "items": items}

    @app.get("/api/stream", tags=["events"], response_class=StreamingResponse)
    async def stream(request: Request, _: Principal) -> StreamingResponse:
        """Server-Sent Events of what the hub commits: ``event``, ``node`` and ``alert`` (JSON data)."""
        async def emit() -> AsyncIterator[str]:
            async with services.feed.subscribe() as queue:
                yield ": connected\n\n"
                idle = 0.0
                while not services.stopping.is_set() and not await request.is_disconnected():
                    try:
                        kind, data = await asyncio.wait_for(queue.get(), 1.0)
                    except TimeoutError:
                        idle += 1.0
                        if idle >= 15:
                            idle = 0.0
                            yield ": keepalive\n\n"
                        continue
                    idle = 0.0
                    yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"

        return StreamingResponse(emit(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    if WEB_STATIC.is_dir():
        from hub.web import mount_dashboard

        mount_dashboard(app)  # last: the dashboard answers every path the API does not
    return app
