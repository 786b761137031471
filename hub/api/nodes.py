"""Routes of the node registry and of the alerts the hub raised."""

from typing import Any

from fastapi import APIRouter

from hub.api.deps import Limit, Principal, Services, SiteQ, errors
from hub.views import alert_json, node_json

router = APIRouter(tags=["nodes"], responses=errors())


@router.get("/api/nodes")
def list_nodes(services: Services, _: Principal, site: SiteQ = None) -> list[dict[str, Any]]:
    """Every known node."""
    return [node_json(row) for row in services.registry.nodes(site)]


@router.get("/api/alerts")
def list_alerts(services: Services, _: Principal, site: SiteQ = None, limit: Limit = 100) -> list[dict[str, Any]]:
    """The newest alerts."""
    return [alert_json(row) for row in services.alerts.recent(site=site, limit=limit)]
