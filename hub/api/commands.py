"""Routes of remote commands: send one to nodes and wait for the answers; read the command audit."""

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from hub.api.deps import ERROR_MEANINGS, NODE_LIST_PATTERN, Limit, Principal, Services, SitePath, errors, rate_limited
from hub.services.commands import CommandStatus, UnknownNode, overall_status
from hub.views import command_json
from shared.errors import ContractError
from shared.messages import SendableCommand

router = APIRouter(tags=["nodes"], responses=errors())


class CommandAnswers(BaseModel):
    """The body of a command's answer, whatever the outcome: the request id, one result per node."""

    request_id: str
    results: list[dict[str, Any]]


#: The command route's answers: the outcome codes carry :class:`CommandAnswers`, the rest a Problem.
COMMAND_RESPONSES: dict[int | str, dict[str, Any]] = {
    **errors(400, 404, 429, 503),
    **{
        code: {"model": CommandAnswers, "description": meaning}
        for code, meaning in ((200, "every node answered ok"), (502, ERROR_MEANINGS[502]), (504, ERROR_MEANINGS[504]))
    },
}

#: HTTP status of a command's overall outcome.
HTTP_STATUS = {CommandStatus.OK: 200, CommandStatus.ERROR: 502, CommandStatus.TIMEOUT: 504}


@router.post("/api/nodes/{site}/{node}/commands/{name}", response_model=None, responses=COMMAND_RESPONSES)
def command(
    site: SitePath,
    node: Annotated[str, Path(pattern=NODE_LIST_PATTERN, description="node id, a comma-separated list, or 'all'")],
    name: SendableCommand,
    services: Services,
    who: Annotated[str, Depends(rate_limited)],
    params: Annotated[dict[str, Any] | None, Body(description='command fields, e.g. {"value": 0.6}')] = None,
    timeout_s: Annotated[float | None, Query(gt=0, le=60, allow_inf_nan=False)] = None,
    force: Annotated[bool, Query(description="send to nodes the hub has never seen too")] = False,
) -> JSONResponse:
    """Send a command to a node, to a comma-separated list of nodes, or to ``all`` nodes of the site,
    and wait for the answers.

    200 when every node answered ok, 502 when one answered ``error``, 504 when one did not answer; 404 when a
    named node is unknown to the registry (nothing is sent) unless ``force=true``.
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
            force=force,
        )
    except ContractError as exc:
        raise HTTPException(422, str(exc)) from None
    except UnknownNode as exc:
        raise HTTPException(404, str(exc)) from None
    body = {"request_id": outcomes[0].request_id, "results": [o.to_json() for o in outcomes]}
    return JSONResponse(body, status_code=HTTP_STATUS[overall_status(outcomes)])


@router.get("/api/commands")
def list_commands(services: Services, _: Principal, limit: Limit = 100) -> list[dict[str, Any]]:
    """The command audit, newest first."""
    return [command_json(row) for row in services.audit.recent(limit)]
