"""Routes for operators: liveness and the rejected payloads."""

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from hub.api.deps import Limit, Principal, Services, errors, principal_unless
from hub.views import rejected_json

log = logging.getLogger(__name__)

router = APIRouter(tags=["ops"], responses=errors())


@router.get("/healthz", responses=errors(503))
def healthz(
    services: Services, _: Annotated[str, Depends(principal_unless(lambda config: config.auth.public_healthz))]
) -> JSONResponse:
    """Liveness: the database answers (503 if not); MQTT and ingest figures for information."""
    try:
        services.store.ping()
        db_ok = True
    except Exception as exc:  # report any database failure as unhealthy
        log.warning("health check: database error: %s", exc)
        db_ok = False
    body = {
        "status": "ok" if db_ok else "error",
        "database": db_ok,
        "mqtt": services.mqtt_connected() if services.mqtt_connected else None,
        "ingest_depth": services.ingest.depth if services.ingest else None,
    }
    return JSONResponse(body, status_code=200 if db_ok else 503)


@router.get("/api/rejected")
def list_rejected(services: Services, _: Principal, limit: Limit = 100) -> dict[str, Any]:
    """Rejection counts by reason and the newest rejected payloads (hex of the first 256 bytes)."""
    items = [rejected_json(row) for row in services.rejected.recent(limit)]
    return {"counts": services.rejected.counts(), "items": items}
