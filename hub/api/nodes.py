"""Routes of the node registry and of the alerts the hub raised."""

from typing import Any

from fastapi import APIRouter, HTTPException

from hub.api.deps import Limit, NodePath, Principal, Services, SitePath, SiteQ, errors
from hub.services.commands import UnknownNode
from hub.views import alert_json, node_json

router = APIRouter(tags=["nodes"], responses=errors())


@router.get("/api/nodes")
def list_nodes(services: Services, _: Principal, site: SiteQ = None) -> list[dict[str, Any]]:
    """Every known node."""
    return [node_json(row) for row in services.registry.nodes(site)]


@router.delete("/api/nodes/{site}/{node}", responses=errors(404, 503))
def forget_node(site: SitePath, node: NodePath, services: Services, _: Principal) -> dict[str, Any]:
    """Forget a node: delete its registry row and clear the retained topics the hub publishes for it
    (``desired``, ``summary``, Home Assistant discovery); 404 when the registry has no such node."""
    if services.commander is None:
        raise HTTPException(503, "this API has no MQTT connection to clear the node's retained topics")
    try:
        cleared = services.commander.forget(site, node)
    except UnknownNode as exc:
        raise HTTPException(404, str(exc)) from None
    return {"site": site, "node": node, "cleared": cleared}


@router.get("/api/alerts")
def list_alerts(services: Services, _: Principal, site: SiteQ = None, limit: Limit = 100) -> list[dict[str, Any]]:
    """The newest alerts."""
    return [alert_json(row) for row in services.alerts.recent(site=site, limit=limit)]
