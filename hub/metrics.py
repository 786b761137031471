"""Prometheus text exposition of the hub: counts read from the database, plus this process's ingest figures.

Counts of stored rows (events, alerts, nodes, commands) come from the
database, so every hub sharing it reports the same figures.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select

from hub.feed import Feed
from hub.ingest import Ingest
from hub.models import AlertRow, CommandRow, CounterRow, EventRow, NodeRow
from hub.store import Store


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


def _node_outboxes(store: Store) -> list[str]:
    """The outbox figures of each node's last stats."""
    with store.session() as session:
        rows = session.execute(select(NodeRow.site, NodeRow.node, NodeRow.stats)).all()
    lines: list[str] = []
    for key, name, help_text in NODE_OUTBOX_GAUGES:
        lines += _family(name, "gauge", help_text,
                         (_sample(name, stats[key], {"site": site, "node": node})
                          for site, node, stats in rows if stats and stats.get(key) is not None))
    return lines


def render(store: Store, ingest: Ingest | None = None, feed: Feed | None = None) -> str:
    """The ``/metrics`` page."""
    with store.session() as session:
        events = session.execute(select(EventRow.site, EventRow.node, EventRow.label, func.count())
                                 .group_by(EventRow.site, EventRow.node, EventRow.label)).all()
        counters = {name: value for name, value in session.execute(select(CounterRow.name, CounterRow.value))}
        nodes = session.execute(select(NodeRow.online, func.count()).group_by(NodeRow.online)).all()
        alerts = session.execute(select(AlertRow.kind, func.count()).group_by(AlertRow.kind)).all()
        commands = session.execute(select(CommandRow.name, CommandRow.status, func.count())
                                   .group_by(CommandRow.name, CommandRow.status)).all()
    lines: list[str] = []
    lines += _family("maskwatch_events_stored", "gauge", "events in the database by site, node and final label",
                     (_sample("maskwatch_events_stored", n, {"site": s, "node": nd, "label": lb})
                      for s, nd, lb, n in events))
    lines += _family("maskwatch_messages_total", "counter", "messages ingested by topic kind",
                     (_sample("maskwatch_messages_total", v, {"kind": k.split(".", 1)[1]})
                      for k, v in sorted(counters.items()) if k.startswith("messages.")))
    lines += _family("maskwatch_rejected_total", "counter", "payloads rejected by reason",
                     (_sample("maskwatch_rejected_total", v, {"reason": k.split(".", 1)[1]})
                      for k, v in sorted(counters.items()) if k.startswith("rejected.")))
    lines += _family("maskwatch_event_duplicates_total", "counter", "event messages received again and ignored",
                     [_sample("maskwatch_event_duplicates_total", counters.get("events.duplicates", 0))])
    lines += _node_outboxes(store)
    state_name = {True: "online", False: "offline", None: "unknown"}
    lines += _family("maskwatch_nodes", "gauge", "known nodes by availability",
                     (_sample("maskwatch_nodes", n, {"state": state_name[online]}) for online, n in nodes))
    lines += _family("maskwatch_alerts_stored", "gauge", "alerts in the database by kind",
                     (_sample("maskwatch_alerts_stored", n, {"kind": k}) for k, n in alerts))
    lines += _family("maskwatch_commands_total", "counter", "audited commands by name and outcome",
                     (_sample("maskwatch_commands_total", n, {"name": nm, "status": st}) for nm, st, n in commands))
    if ingest is not None:
        stats = ingest.stats
        lines += _family("maskwatch_ingest_queue_depth", "gauge", "messages received, not yet committed",
                         [_sample("maskwatch_ingest_queue_depth", ingest.depth)])
        lines += _family("maskwatch_ingest_batches_total", "counter", "transactions committed by this hub",
                         [_sample("maskwatch_ingest_batches_total", stats.batches)])
        lines += _family("maskwatch_ingest_last_batch_ms", "gauge", "duration of the last batch",
                         [_sample("maskwatch_ingest_last_batch_ms", stats.last_batch_ms)])
        lines += _family("maskwatch_ingest_storage_errors_total", "counter",
                         "batches retried after a database or snapshot-folder error",
                         [_sample("maskwatch_ingest_storage_errors_total", stats.storage_errors)])
        if ingest.acks is not None:
            lines += _family("maskwatch_acks_published_total", "counter", "acks this hub published to nodes",
                             [_sample("maskwatch_acks_published_total", ingest.acks.acks)])
            lines += _family("maskwatch_ack_bytes_total", "counter", "payload bytes of those acks",
                             [_sample("maskwatch_ack_bytes_total", ingest.acks.bytes)])
        lines += _family("maskwatch_ingest_failed_messages_total", "counter",
                         "messages the writer failed on (a bug), left unacknowledged for redelivery",
                         [_sample("maskwatch_ingest_failed_messages_total", stats.failed_messages)])
    if feed is not None:
        lines += _family("maskwatch_stream_clients", "gauge", "open /api/stream connections",
                         [_sample("maskwatch_stream_clients", feed.subscribers)])
    return "\n".join(lines) + "\n"
