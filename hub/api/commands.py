"""Routes of remote commands: send one to nodes and wait for the answers; read the command audit."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query
from fastapi.responses import JSONResponse

from hub.api.deps import Limit, Principal, Services, rate_limited
from hub.services.commands import CommandStatus, overall_status
from hub.views import command_json, outcome_json
from shared.errors import ContractError
from shared.messages import SendableCommand

router = APIRouter(tags=["nodes"])

#: HTTP status of a command's overall outcome.
HTTP_STATUS = {CommandStatus.OK: 200, CommandStatus.ERROR: 502, CommandStatus.TIMEOUT: 504}


@router.post("/api/nodes/{site}/{node}/commands/{name}")
def command(
    site: str,
    node: str,
    name: SendableCommand,
    services: Services,
    who: Annotated[str, Depends(rate_limited)],
    params: Annotated[dict[str, Any] | None, Body(description='command fields, e.g. {"value": 0.6}')] = None,
    timeout_s: Annotated[float | None, Query(gt=0, le=60)] = None,
) -> JSONResponse:
    """Send a command to a node, to a comma-separated list of nodes, or to ``all`` nodes of the site,
    and wait for the answers.

    200 when every node answered ok, 502 when one answered ``error``, 504 when one did not answer.
    """
    if services.commander is None:
        raise HTTPException(503, "this API has no MQTT connection to send commands")
    try:
        outcomes = services.commander.send(
            site,
            None if node == "all" else node.split(","),
            name.value,
            params or {},
            source=f"api:{who}",
            timeout_s=timeout_s,
        )
    except ContractError as exc:
        raise HTTPException(422, str(exc)) from None
    body = {"request_id": outcomes[0].request_id, "results": [outcome_json(o) for o in outcomes]}
    return JSONResponse(body, status_code=HTTP_STATUS[overall_status(outcomes)])


@router.get("/api/commands")
def list_commands(services: Services, _: Principal, limit: Limit = 100) -> list[dict[str, Any]]:
    """The command audit, newest first."""
    return [command_json(row) for row in services.audit.recent(limit)]
