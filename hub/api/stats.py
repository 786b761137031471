"""Route of the compliance figures (share of faces with masks) for the dashboard and scripts."""

from datetime import timedelta
from typing import Any

from fastapi import APIRouter

from hub.api.deps import Principal, Services, Since, Until, aware, errors
from hub.views import stats_json
from shared.messages import utc_now

router = APIRouter(tags=["events"], responses=errors())


@router.get("/api/stats")
def stats(services: Services, _: Principal, since: Since = None, until: Until = None) -> dict[str, Any]:
    """Compliance (share of faces with masks) overall, per node, per hour and per node and hour (UTC hours;
    default: last 24 h)."""
    until_ = aware(until) or utc_now()
    since_ = aware(since) or until_ - timedelta(hours=24)
    ingest = services.ingest
    return stats_json(
        since_,
        until_,
        services.events.label_counts(since=since_, until=until_, by_hour=True),
        services.store.counters("rejected."),
        None
        if ingest is None
        else {
            "received": ingest.stats.received,
            "committed": ingest.stats.committed,
            "batches": ingest.stats.batches,
            "duplicates": ingest.stats.duplicates,
            "queue_depth": ingest.depth,
            "rejected": dict(ingest.stats.rejected),
        },
    )
