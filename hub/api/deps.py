"""What every route of the API depends on: the hub's services, the caller's identity, the command rate limit,
and the shared query parameters.

:func:`hub.api.create_app` puts the :class:`HubServices`, the :class:`~hub.services.auth.TokenChecker` and the
:class:`~hub.services.auth.RateLimiter` on ``app.state``; routes ask for them with the aliases below.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency aliases at run time.
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator

from hub.config import HubConfig
from hub.ingest.consumer import Ingest
from hub.services.auth import RateLimiter, TokenChecker
from hub.services.commands import Commander
from hub.services.feed import Feed
from hub.storage.alerts import AlertStore
from hub.storage.commands import CommandAudit
from hub.storage.database import Store
from hub.storage.events import EventFilter, EventLog
from hub.storage.nodes import Registry
from hub.storage.rejected import RejectedStore
from shared.topics import EVENT_ID_PATTERN, ID_PATTERN
from shared.vocabulary import Label

#: The largest page of any list route.
MAX_PAGE = 1000
#: The largest offset into any list (far above any stored table, far below SQLite's 64-bit integers).
MAX_OFFSET = 10**9
#: The span of times a query may name; a day inside datetime's own span, so a day's arithmetic cannot overflow.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


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
    alerts: AlertStore = field(init=False)
    audit: CommandAudit = field(init=False)
    rejected: RejectedStore = field(init=False)

    def __post_init__(self) -> None:
        self.alerts = AlertStore(self.store)
        self.audit = CommandAudit(self.store)
        self.rejected = RejectedStore(self.store)

    @property
    def public_url(self) -> str:
        http = self.config.http
        return (http.public_url or f"http://{http.host}:{http.port}").rstrip("/")


def get_services(request: Request) -> HubServices:
    """The services of the app serving ``request``."""
    return request.app.state.services


Services = Annotated[HubServices, Depends(get_services)]

bearer = HTTPBearer(auto_error=False, description="an API token (maskwatch hub --new-token NAME)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def principal(request: Request, credentials: Credentials) -> str:
    """The name of the caller's token (401 when refused); ``/api/stream`` also takes ``?access_token=``."""
    token = credentials.credentials.strip() if credentials else None
    if not token and request.url.path == "/api/stream":
        token = request.query_params.get("access_token")
    checker: TokenChecker = request.app.state.tokens
    name = checker.identify(token)
    if name is None:
        raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": "Bearer"})
    return name


Principal = Annotated[str, Depends(principal)]


def principal_unless(public: Callable[[HubConfig], bool]) -> Callable[..., str]:
    """A dependency that lets everyone in when ``public(config)`` holds, else asks for :func:`principal`."""

    def check(request: Request, credentials: Credentials) -> str:
        return "public" if public(get_services(request).config) else principal(request, credentials)

    return check


def rate_limited(request: Request, who: Principal) -> str:
    """The caller, once the command rate limit lets it through (429 with ``Retry-After`` when not)."""
    checker: TokenChecker = request.app.state.tokens
    limiter: RateLimiter = request.app.state.limiter
    key = who if checker.enabled else f"ip:{request.client.host if request.client else '?'}"
    wait = limiter.take(key)
    if wait > 0:
        raise HTTPException(
            429, f"too many commands: retry in {wait:.0f} s", headers={"Retry-After": str(max(1, round(wait)))}
        )
    return who


def _iso_time(value: object) -> object:
    """Refuse a bare number as a time (pydantic would read ``0.5`` as seconds since 1970)."""
    if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        raise ValueError("give an ISO 8601 time with a timezone, e.g. 2026-01-01T12:00:00Z, not a number")
    return value


#: A number, which :func:`_iso_time` refuses as a time.
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?(inf|infinity|nan)", re.IGNORECASE)
#: A comma-separated list of node ids (or ``all``), at most this many.
MAX_NODES = 100
NODE_LIST_PATTERN = rf"^{ID_PATTERN.pattern[1:-1]}(,{ID_PATTERN.pattern[1:-1]}){{0,{MAX_NODES - 1}}}$"

Since = Annotated[
    datetime | None,
    BeforeValidator(_iso_time),
    Query(description="ISO 8601 with a timezone; events received (the hub's clock) at or after"),
]
Until = Annotated[
    datetime | None,
    BeforeValidator(_iso_time),
    Query(description="ISO 8601 with a timezone; events received (the hub's clock) before"),
]
LabelQ = Annotated[Label | None, Query()]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE)]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
SiteQ = Annotated[str | None, Query(pattern=ID_PATTERN.pattern, max_length=64, description="only this site")]
NodeQ = Annotated[str | None, Query(pattern=ID_PATTERN.pattern, max_length=64, description="only this node")]
SitePath = Annotated[str, Path(pattern=ID_PATTERN.pattern, max_length=64, description="site id")]
NodePath = Annotated[str, Path(pattern=ID_PATTERN.pattern, max_length=64, description="node id")]
EventId = Annotated[str, Path(pattern=EVENT_ID_PATTERN.pattern, max_length=128, description="event id")]


class Problem(BaseModel):
    """The JSON body of every 4xx/5xx answer: a message, or FastAPI's list of validation errors."""

    detail: str | list[dict[str, Any]]


#: What each error status of the API means, for the OpenAPI ``responses`` of the routes.
ERROR_MEANINGS = {
    400: "the body is not JSON",
    401: "no token, or a wrong one (only when auth.tokens is set)",
    404: "no such event, snapshot or node",
    422: "a parameter or body field out of its range",
    429: "too many commands: retry after Retry-After seconds",
    500: "an unexpected hub error (logged)",
    502: "a node answered error",
    503: "no MQTT connection (read-only API), or no database",
    504: "a node did not answer in time",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for ``codes`` (401, 422 and 500 always), each with a :class:`Problem` body."""
    return {code: {"model": Problem, "description": ERROR_MEANINGS[code]} for code in sorted({401, 422, 500, *codes})}


def aware(value: datetime | None) -> datetime | None:
    """``value``, or 422 when it has no timezone or lies outside :data:`EARLIEST`..:data:`LATEST`."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise HTTPException(422, "give times with a timezone, e.g. 2026-01-01T12:00:00Z")
    try:
        in_range = EARLIEST <= value.astimezone(UTC) <= LATEST
    except OverflowError:
        in_range = False
    if not in_range:
        raise HTTPException(422, f"give times between {EARLIEST.isoformat()} and {LATEST.isoformat()}")
    return value


def event_filter(
    site: SiteQ = None, node: NodeQ = None, label: LabelQ = None, since: Since = None, until: Until = None
) -> EventFilter:
    """The :class:`EventFilter` of a request's query parameters (times checked by :func:`aware`)."""
    return EventFilter(site, node, label, aware(since), aware(until))


#: A route parameter taking the event filter from the query: ``site``, ``node``, ``label``, ``since``, ``until``.
EventFilterQ = Annotated[EventFilter, Depends(event_filter)]
