"""Route of the Prometheus text exposition: counts read from the database, plus this process's ingest figures.

Counts of stored rows (events, alerts, nodes, commands) come from the
database, so every hub sharing it reports the same figures.
"""

from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from hub.api.deps import HubServices, Services, errors, principal_unless
from hub.views import AVAILABILITY

router = APIRouter(tags=["ops"], responses=errors())


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(name: str, value: float, labels: dict[str, object] | None = None) -> str:
    if labels:
        inner = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
        return f"{name}{{{inner}}} {value:g}"
    return f"{name} {value:g}"


def _family(name: str, kind: str, help_text: str, samples: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]


#: Node stats shown as gauges per node: (stats field, metric name, help).
NODE_OUTBOX_GAUGES = (
    ("outbox_depth", "maskwatch_node_outbox_depth", "messages in the node's outbox, not yet acknowledged"),
    ("outbox_unacked", "maskwatch_node_outbox_unacked", "outbox messages published, awaiting their ack"),
    ("outbox_oldest_s", "maskwatch_node_outbox_oldest_seconds", "age of the oldest message in the node's outbox"),
)


def _node_outboxes(services: HubServices) -> list[str]:
    """The outbox figures of each node's last stats."""
    rows = [(node.site, node.node, node.stats) for node in services.registry.nodes()]
    lines: list[str] = []
    for key, name, help_text in NODE_OUTBOX_GAUGES:
        lines += _family(
            name,
            "gauge",
            help_text,
            (
                _sample(name, stats[key], {"site": site, "node": node})
                for site, node, stats in rows
                if stats and stats.get(key) is not None
            ),
        )
    return lines


@router.get("/metrics", responses={200: {"description": "Prometheus text", "content": {"text/plain": {}}}})
def metrics_page(
    services: Services, _: Annotated[str, Depends(principal_unless(lambda config: config.auth.public_metrics))]
) -> PlainTextResponse:
    """Prometheus text exposition."""
    return PlainTextResponse(render(services), media_type="text/plain; version=0.0.4")


def render(services: HubServices) -> str:
    """The ``/metrics`` page."""
    events = services.events.label_counts()
    counters = services.store.counters()
    nodes = services.registry.counts_by_availability()
    alerts = services.alerts.counts_by_kind()
    commands = services.audit.counts()
    ingest = services.ingest
    lines: list[str] = []
    lines += _family(
        "maskwatch_events_stored",
        "gauge",
        "events in the database by site, node and final label",
        (_sample("maskwatch_events_stored", n, {"site": s, "node": nd, "label": lb}) for s, nd, _hour, lb, n in events),
    )
    lines += _family(
        "maskwatch_messages_total",
        "counter",
        "messages ingested by topic kind",
        (
            _sample("maskwatch_messages_total", v, {"kind": k.split(".", 1)[1]})
            for k, v in sorted(counters.items())
            if k.startswith("messages.")
        ),
    )
    lines += _family(
        "maskwatch_rejected_total",
        "counter",
        "payloads rejected by reason",
        (
            _sample("maskwatch_rejected_total", v, {"reason": k.split(".", 1)[1]})
            for k, v in sorted(counters.items())
            if k.startswith("rejected.")
        ),
    )
    lines += _family(
        "maskwatch_event_duplicates_total",
        "counter",
        "event messages received again and ignored",
        [_sample("maskwatch_event_duplicates_total", counters.get("events.duplicates", 0))],
    )
    lines += _node_outboxes(services)
    lines += _family(
        "maskwatch_clock_skew_events_total",
        "counter",
        "event messages whose ts was more than clock.max_skew_s off the hub's clock, by node",
        (
            _sample("maskwatch_clock_skew_events_total", n, {"site": site, "node": node})
            for site, node, n in services.registry.skew_counts()
        ),
    )
    lines += _family(
        "maskwatch_nodes",
        "gauge",
        "known nodes by availability",
        (_sample("maskwatch_nodes", n, {"state": AVAILABILITY[online]}) for online, n in nodes),
    )
    lines += _family(
        "maskwatch_alerts_stored",
        "gauge",
        "alerts in the database by kind",
        (_sample("maskwatch_alerts_stored", n, {"kind": k}) for k, n in alerts),
    )
    lines += _family(
        "maskwatch_commands_total",
        "counter",
        "audited commands by name and outcome",
        (_sample("maskwatch_commands_total", n, {"name": nm, "status": st}) for nm, st, n in commands),
    )
    if ingest is not None:
        stats = ingest.stats
        lines += _family(
            "maskwatch_ingest_queue_depth",
            "gauge",
            "messages received, not yet committed",
            [_sample("maskwatch_ingest_queue_depth", ingest.depth)],
        )
        lines += _family(
            "maskwatch_ingest_batches_total",
            "counter",
            "transactions committed by this hub",
            [_sample("maskwatch_ingest_batches_total", stats.batches)],
        )
        lines += _family(
            "maskwatch_ingest_last_batch_ms",
            "gauge",
            "duration of the last batch",
            [_sample("maskwatch_ingest_last_batch_ms", stats.last_batch_ms)],
        )
        lines += _family(
            "maskwatch_ingest_storage_errors_total",
            "counter",
            "batches retried after a database or snapshot-folder error",
            [_sample("maskwatch_ingest_storage_errors_total", stats.storage_errors)],
        )
        if ingest.acks is not None:
            lines += _family(
                "maskwatch_acks_published_total",
                "counter",
                "acks this hub published to nodes",
                [_sample("maskwatch_acks_published_total", ingest.acks.acks)],
            )
            lines += _family(
                "maskwatch_ack_bytes_total",
                "counter",
                "payload bytes of those acks",
                [_sample("maskwatch_ack_bytes_total", ingest.acks.bytes)],
            )
        lines += _family(
            "maskwatch_ingest_failed_messages_total",
            "counter",
            "messages the writer failed on (a bug), left unacknowledged for redelivery",
            [_sample("maskwatch_ingest_failed_messages_total", stats.failed_messages)],
        )
    lines += _family(
        "maskwatch_stream_clients",
        "gauge",
        "open /api/stream connections",
        [_sample("maskwatch_stream_clients", services.feed.subscribers)],
    )
    return "\n".join(lines) + "\n"
