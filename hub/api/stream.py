"""Route of the live feed: Server-Sent Events of what the hub commits."""

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from hub.api.deps import Principal, Services, errors

router = APIRouter(tags=["events"], responses=errors())


@router.get("/api/stream", response_class=StreamingResponse)
async def stream(request: Request, services: Services, _: Principal) -> StreamingResponse:
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

    return StreamingResponse(
        emit(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
