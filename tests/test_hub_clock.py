"""Hub-side time (issue 16): the hub's clock orders, prunes and times alerts; a node's wrong clock is flagged,
counted and shown, never trusted. Real SQLite files and, end to end, the real Mosquitto."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from hub_support import hub_config, make_event, publisher, running_hub
from sqlalchemy import inspect, select, text

from hub.config import HubConfig
from hub.ingest.batch_core import BatchWriter, WriterSettings
from hub.storage.database import Store
from hub.storage.events import EventFilter, EventLog
from hub.storage.nodes import Registry
from hub.storage.rows import AlertRow, EventRow, NodeRow
from shared.cli import main
from shared.config import BrokerConfig, load_config
from shared.errors import ConfigError
from shared.logcap import LogCap
from shared.messages import NodeStats, utc_now
from shared.topics import NodeTopics
from tests.polling import unique_site, wait_until
from tests.test_hub_store import head_revision, upgrade_to

T0 = utc_now().replace(microsecond=0)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FAR = datetime(2999, 1, 1, tzinfo=UTC)
EVENTS = NodeTopics("hq", "n").events


def writer(store: Store, tmp_path: Path, *, cooldown_s: float = 0.0, reject_log: LogCap | None = None) -> BatchWriter:
    settings = WriterSettings(
        db_url=store.url,
        snapshot_dir=tmp_path / "snaps",
        max_snapshot_bytes=10_000,
        rejected_max_rows=100,
        alert_cooldown_s=cooldown_s,
        public_url="http://hub",
    )
    built = settings.build(store)
    if reject_log is not None:
        built.reject_log = reject_log
    return built


def event_bytes(n: int, ts: datetime, label: str = "mask") -> bytes:
    return make_event("hq", "n", n, ts=ts, label=label).to_json()


def test_prune_goes_by_the_hubs_clock_not_the_nodes(store: Store, tmp_path: Path) -> None:
    """1970 received now is kept; 2999 received 40 days ago is pruned (the old code did the opposite)."""
    w = writer(store, tmp_path)
    w.write([(EVENTS, event_bytes(1, FAR))], T0 - timedelta(days=40))
    w.write([(EVENTS, event_bytes(2, EPOCH))], T0)
    deleted = store.prune(30, tmp_path / "snaps", now=T0)
    assert deleted["events"] == 1 and deleted["event_messages"] == 1
    log = EventLog(store, tmp_path)
    assert log.get("hq-n-00001") is None
    kept = log.get("hq-n-00002")
    assert kept is not None and kept.clock_skewed and kept.first_seen == EPOCH and kept.received_at == T0


def test_listing_is_by_receipt_and_keeps_the_first(store: Store, tmp_path: Path) -> None:
    w = writer(store, tmp_path)
    w.write([(EVENTS, event_bytes(1, FAR))], T0 - timedelta(minutes=2))
    w.write([(EVENTS, event_bytes(2, T0 - timedelta(minutes=1)))], T0 - timedelta(minutes=1))
    w.write([(EVENTS, event_bytes(3, EPOCH))], T0)
    w.write([(EVENTS, make_event("hq", "n", 1, kind="end", ts=FAR).to_json())], T0)  # a later message of event 1
    rows, total = EventLog(store, tmp_path).query()
    assert total == 3 and [r.id for r in rows] == ["hq-n-00003", "hq-n-00002", "hq-n-00001"]
    assert rows[2].received_at == T0 - timedelta(minutes=2)  # the first receipt stays
    assert [r.clock_skewed for r in rows] == [True, False, True]
    recent, _ = EventLog(store, tmp_path).query(EventFilter(since=T0 - timedelta(seconds=90)))
    assert [r.id for r in recent] == ["hq-n-00003", "hq-n-00002"]  # 2999 is not "recent": it came 2 min ago


def test_compliance_counts_by_receipt(store: Store, tmp_path: Path) -> None:
    w = writer(store, tmp_path)
    w.write([(EVENTS, event_bytes(1, FAR)), (EVENTS, event_bytes(2, EPOCH, "no_mask"))], T0)
    counts = EventLog(store, tmp_path).label_counts(since=T0 - timedelta(hours=1), until=T0 + timedelta(hours=1))
    assert sorted(counts) == [("hq", "n", None, "mask", 1), ("hq", "n", None, "no_mask", 1)]
    hours = {row[2] for row in EventLog(store, tmp_path).label_counts(by_hour=True)}
    assert hours == {T0.strftime("%Y-%m-%dT%H:00:00Z")}


def test_skew_is_flagged_counted_once_and_follows_max_skew(store: Store, tmp_path: Path) -> None:
    w = writer(store, tmp_path)
    late = event_bytes(1, T0 - timedelta(seconds=299))
    early = event_bytes(2, T0 + timedelta(seconds=301))
    w.write([(EVENTS, late), (EVENTS, early), (EVENTS, early)], T0)
    w.write([(EVENTS, early)], T0)  # redelivered: not counted again
    log = EventLog(store, tmp_path)
    assert [log.get(f"hq-n-0000{n}").clock_skewed for n in (1, 2)] == [False, True]  # type: ignore[union-attr]
    with store.session() as session:
        node = session.get(NodeRow, ("hq", "n"))
    assert node is not None and node.clock_skewed_events == 1 and not node.clock_skewed


def test_stats_measure_the_nodes_clock(store: Store, tmp_path: Path) -> None:
    w = writer(store, tmp_path)

    def stats(ts: datetime) -> bytes:
        return NodeStats(site="hq", node="n", ts=ts, fps=5.0).to_json()

    topic = NodeTopics("hq", "n").stats
    w.write([(topic, stats(T0 - timedelta(hours=1)))], T0)
    with store.session() as session:
        node = session.get(NodeRow, ("hq", "n"))
        assert node is not None and node.clock_skewed and node.clock_offset_s == -3600.0
    w.write([(topic, stats(T0 + timedelta(seconds=2)))], T0 + timedelta(seconds=10))
    with store.session() as session:
        node = session.get(NodeRow, ("hq", "n"))
        assert node is not None and not node.clock_skewed and node.clock_offset_s == -8.0


def test_a_late_event_from_a_node_with_a_right_clock_is_not_skewed(store: Store, tmp_path: Path) -> None:
    """An outbox replayed after an outage: old ``ts``, but the node's clock was measured right (its stats, before
    or in the same batch), so the event is late, not skewed. A node measured wrong, or never, keeps the flag."""
    w = writer(store, tmp_path)

    def stats(node: str, ts: datetime) -> tuple[str, bytes]:
        return NodeTopics("hq", node).stats, NodeStats(site="hq", node=node, ts=ts, fps=5.0).to_json()

    def event(node: str, n: int, ts: datetime) -> tuple[str, bytes]:
        return NodeTopics("hq", node).events, make_event("hq", node, n, ts=ts).to_json()

    an_hour_ago = T0 - timedelta(hours=1)
    w.write(
        [stats("right", an_hour_ago + timedelta(seconds=2)), stats("wrong", an_hour_ago - timedelta(hours=1))],
        an_hour_ago,
    )
    w.write(
        [
            event("right", 1, an_hour_ago + timedelta(seconds=5)),  # held an hour in the outbox
            event("wrong", 1, an_hour_ago + timedelta(seconds=5)),
            event("never", 1, an_hour_ago + timedelta(seconds=5)),
            stats("fresh", T0),  # measured in the same batch as its late event
            event("fresh", 1, an_hour_ago),
            event("right", 2, T0 + timedelta(hours=1)),  # ahead: no delay explains it
        ],
        T0,
    )
    log = EventLog(store, tmp_path)
    flags = {e.id: e.clock_skewed for e in log.query()[0]}
    assert flags == {
        "hq-right-00001": False,
        "hq-wrong-00001": True,
        "hq-never-00001": True,
        "hq-fresh-00001": False,
        "hq-right-00002": True,
    }
    assert {(site, node): n for site, node, n in Registry(store).skew_counts()} == {
        ("hq", "fresh"): 0,
        ("hq", "never"): 1,
        ("hq", "right"): 1,
        ("hq", "wrong"): 1,
    }


def test_cooldown_runs_on_the_hubs_clock(store: Store, tmp_path: Path) -> None:
    """Alert times and cooldowns are the hub's (already so before issue 16: a guard, not a probe)."""
    w = writer(store, tmp_path, cooldown_s=60)
    first = w.write([(EVENTS, event_bytes(1, FAR, "no_mask"))], T0)
    inside = w.write([(EVENTS, event_bytes(2, EPOCH, "no_mask"))], T0 + timedelta(seconds=30))
    after = w.write([(EVENTS, event_bytes(3, EPOCH, "no_mask"))], T0 + timedelta(seconds=61))
    assert [len(r.alerts) for r in (first, inside, after)] == [1, 0, 1]
    with store.session() as session:
        assert list(session.scalars(select(AlertRow.ts).order_by(AlertRow.id))) == [T0, T0 + timedelta(seconds=61)]


def test_upgrade_from_0003_keeps_rows_and_adds_the_clock_columns(tmp_path: Path) -> None:
    s = Store(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade_to(s, "0003")
    with s.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO events (id, site, node, first_seen, last_seen, label, best_score, box, started, "
                "messages, snapshot_expected, alerted, received_at, updated_at) VALUES ('e1', 'hq', 'n', "
                "'2026-01-01 00:00:00.000000', '2026-01-01 00:00:01.000000', 'mask', 0.9, '[1, 2, 3, 4]', 1, 1, 0, "
                "0, '2026-01-01 00:00:02.000000', '2026-01-01 00:00:02.000000')"
            )
        )
        conn.execute(text("INSERT INTO nodes (site, node, online, offline_alerted) VALUES ('hq', 'n', 1, 0)"))
    assert s.migrate() == head_revision()
    assert "ix_events_received_at" in {index["name"] for index in inspect(s.engine).get_indexes("events")}
    with s.session() as session:
        event = session.get(EventRow, "e1")
        node = session.get(NodeRow, ("hq", "n"))
    assert event is not None and not event.clock_skewed
    assert event.received_at == datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)
    assert node is not None and (node.clock_offset_s, node.clock_skewed, node.clock_skewed_events) == (None, False, 0)
    rows, _ = EventLog(s, tmp_path).query()
    assert [r.id for r in rows] == ["e1"]
    s.close()


def test_max_skew_is_validated_like_the_rest(tmp_path: Path) -> None:
    assert HubConfig().clock.max_skew_s == 300
    path = tmp_path / "hub.yaml"
    path.write_text("clock: {max_skew_s: 0, slack: 1}\n")
    with pytest.raises(ConfigError) as err:
        load_config(HubConfig, path)
    assert "clock.max_skew_s" in str(err.value) and "slack: unknown key" in str(err.value)


def test_a_node_with_a_wrong_clock_end_to_end(
    broker_config: BrokerConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over the real broker: 2999 does not go first in /api/events, the node is marked in /api/nodes,
    ``maskwatch nodes`` and /metrics, and the skewed events are counted."""
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site)
    topics = NodeTopics(site, "cam")
    with running_hub(config) as hub:
        store = Store(config.db_url)
        client = publisher(broker_config, "cam")
        log = EventLog(store, tmp_path)
        client.publish(topics.events, make_event(site, "cam", 1, ts=FAR), qos=1)
        assert wait_until(lambda: log.get(f"{site}-cam-00001") is not None, 10)
        client.publish(topics.events, make_event(site, "cam", 2, ts=EPOCH), qos=1)
        client.publish(topics.events, make_event(site, "cam", 3), qos=1)
        ahead = NodeStats(site=site, node="cam", ts=utc_now() + timedelta(hours=1), fps=5.0)
        client.publish(topics.stats, ahead, qos=1)
        assert wait_until(lambda: hub.ingest is not None and hub.ingest.stats.received >= 4, 10)
        base = f"http://127.0.0.1:{hub.http_port}"
        assert wait_until(lambda: httpx.get(f"{base}/api/events").json()["total"] == 3, 10)
        items = httpx.get(f"{base}/api/events").json()["items"]
        assert items[-1]["id"] == f"{site}-cam-00001" and items[-1]["first_seen"].startswith("2999")
        assert [item["clock_skewed"] for item in items][-1] and "received_at" in items[0]
        node = httpx.get(f"{base}/api/nodes").json()[0]
        assert node["clock_skewed"] and 3590 < node["clock_offset_s"] < 3610 and node["clock_skewed_events"] == 2
        metrics = httpx.get(f"{base}/metrics").text
        assert f'maskwatch_clock_skew_events_total{{site="{site}",node="cam"}} 2' in metrics
        client.stop()
        store.close()
    assert main(["nodes", "--db", config.db_url]) == 0
    assert "off by +3600s" in capsys.readouterr().out


def test_2000_rejections_log_a_few_lines_and_count_all(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [0.0]
    cap = LogCap(logging.getLogger("hub.ingest.batch_core"), "rejections", clock=lambda: now[0])
    w = writer(store, tmp_path, reject_log=cap)
    garbage = [(EVENTS, b"{not json %d" % n) for n in range(1500)] + [(EVENTS, b'{"v": 9}')] * 500
    with caplog.at_level(logging.WARNING, logger="hub.ingest.batch_core"):
        for start in range(0, 2000, 200):
            w.write(garbage[start : start + 200], T0)
        now[0] = 61.0
        w.write([(EVENTS, b"[]")], T0)
    lines = [r.getMessage() for r in caplog.records if r.name == "hub.ingest.batch_core"]
    assert sum("(json)" in line for line in lines) == 5 and sum("(version)" in line for line in lines) == 5
    assert "suppressed 1495 more 'json' rejections in the last 60 s" in lines
    assert "suppressed 495 more 'version' rejections in the last 60 s" in lines
    assert len(lines) == 13  # 5 + 5, two summaries, and the first line of the new window
    assert store.counters("rejected.") == {"rejected.json": 1500, "rejected.version": 500, "rejected.schema": 1}
