"""The REST API of the hub (FastAPI; OpenAPI at ``/openapi.json``, docs at ``/docs``).

Routes (people script against them; keep them stable)::

    GET  /api/events                 filters site, node, label, since, until; limit/offset pagination
    GET  /api/events.csv             the same filters, every matching row
    GET  /api/events/{id}            one event with its raw messages
    GET  /api/events/{id}/snapshot.jpg
    GET  /api/nodes                  registry: online, last seen, state, stats, model, desired config
    GET  /api/stats                  compliance (share of faces with masks) per node and per hour
    POST /api/nodes/{site}/{node}/commands/{name}   node 'all' = every node of the site; 404 unknown unless force
    DELETE /api/nodes/{site}/{node}  forget a node: registry row, hub-owned retained topics
    GET  /api/alerts, /api/commands, /api/rejected
    GET  /api/stream                 Server-Sent Events: event, node, alert
    GET  /api/vocabulary             the contract's words: labels, servo modes and range, profiles, commands
    GET  /metrics                    Prometheus text
    GET  /healthz
    GET  /docs, /redoc              interactive docs, assets served by the hub (no CDN)

Every route but ``/healthz`` and ``/metrics`` (each configurable public) needs a
bearer token when ``auth.tokens`` is set; refused requests get 401 and no data.
Command routes are rate-limited per token (429 with ``Retry-After``).
The dashboard (:mod:`hub.web`) is served at ``/`` when its ``static`` folder is present.

Each family of routes is an ``APIRouter`` module (``events``, ``stats``, ``nodes``, ``commands``, ``stream``,
``ops``, ``metrics``, ``vocabulary``); :func:`create_app` only assembles them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from hub.api import commands, events, metrics, nodes, ops, stats, stream, vocabulary
from hub.api.deps import HubServices
from hub.api.docs import mount_docs
from hub.services.auth import RateLimiter, TokenChecker
from hub.web import STATIC, mount_dashboard

__all__ = ["HubServices", "create_app"]

log = logging.getLogger(__name__)

ROUTERS = (
    ops.router,
    metrics.router,
    events.router,
    nodes.router,
    stats.router,
    commands.router,
    stream.router,
    vocabulary.router,
)


def create_app(services: HubServices) -> FastAPI:
    """The FastAPI application over ``services``."""
    app = FastAPI(title="Maskwatch hub", version="1", description=__doc__, docs_url=None, redoc_url=None)
    app.state.services = services
    app.state.tokens = TokenChecker(services.config.auth)
    app.state.limiter = RateLimiter(services.config.auth.command_rate_per_min)
    for router in ROUTERS:
        app.include_router(router)
    mount_docs(app)
    app.middleware("http")(_unexpected_errors)
    if STATIC.is_dir():
        mount_dashboard(app)  # last: the dashboard answers every path the API does not
    return app


async def _unexpected_errors(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """The last boundary: an unexpected error becomes one logged line and a 500 with a JSON body (no traceback
    in the log; bad input is a 4xx long before this)."""
    try:
        return await call_next(request)
    except Exception as exc:  # the API's one boundary: anything a route did not expect
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return JSONResponse({"detail": "internal error (logged by the hub)"}, status_code=500)
