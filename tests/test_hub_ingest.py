"""Durable ingest against the real Mosquitto and real SQLite files."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hub_support import alert_watcher, hub_config, make_event, publisher, running_hub
from sqlalchemy import func, select

from hub.storage.database import Store
from hub.storage.rows import AlertRow, EventMessage, EventRow, NodeRow, RejectedRow, SnapshotRow
from shared.config import BrokerConfig
from shared.messages import MAX_PAYLOAD_BYTES, Alert, NodeState, ServoState, parse, utc_now
from shared.topics import NodeTopics
from tests.polling import unique_site, wait_until

MALFORMED = {  # reason -> how many of the 50, and a payload factory
    "json": (15, lambda n: b'{"v": 1, "type": "new", "id": ' + str(n).encode()),
    "schema": (
        15,
        lambda n: json.dumps(
            {
                "v": 1,
                "type": "new",
                "id": f"x{n}",
                "site": "s",
                "node": "n",
                "ts": "yesterday",
                "label": "maybe",
                "score": "high",
                "box": [1, 2],
            }
        ).encode(),
    ),
    "version": (10, lambda n: json.dumps({"v": 2, "type": "new", "id": f"x{n}"}).encode()),
    "oversize": (10, lambda n: b'{"pad": "' + b"x" * (MAX_PAYLOAD_BYTES + 10) + b'"}'),
}


def count(store: Store, model: type, *where: object) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_2000_events_with_duplicates_and_malformed(broker_config: BrokerConfig, tmp_path: Path) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site)
    nodes = [f"n{i}" for i in range(5)]
    with running_hub(config) as hub:
        store = Store(config.db_url)
        rng = random.Random(6)
        plans: list[list[tuple[str, bytes]]] = []
        bad = [(reason, make(n)) for reason, (k, make) in MALFORMED.items() for n in range(k)]
        for index, node in enumerate(nodes):
            topic = NodeTopics(site, node).events
            msgs = [(topic, make_event(site, node, n).to_json()) for n in range(400)]
            msgs += rng.sample(msgs, 40)  # 10% sent twice
            msgs += [(topic, payload) for _reason, payload in bad[index::5]]
            rng.shuffle(msgs)
            plans.append(msgs)

        def send(name: str, msgs: list[tuple[str, bytes]]) -> None:
            client = publisher(broker_config, name)
            infos = [client.publish(topic, payload, qos=1) for topic, payload in msgs]
            for info in infos:
                info.wait_for_publish(20)
            client.stop()

        threads = [threading.Thread(target=send, args=(n, p)) for n, p in zip(nodes, plans, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert wait_until(lambda: hub.ingest is not None and hub.ingest.stats.received >= 2250, 60)
        assert wait_until(lambda: count(store, EventRow) == 2000, 10)
        assert count(store, EventMessage) == 2000
        assert count(store, EventRow, EventRow.messages != 1) == 0
        assert store.counters("rejected.") == {f"rejected.{r}": k for r, (k, _m) in MALFORMED.items()}
        assert store.counters("events.") == {"events.duplicates": 200}
        assert count(store, RejectedRow) == 50
        assert hub.ingest is not None and hub.ingest.stats.rejected == {r: k for r, (k, _m) in MALFORMED.items()}
        # still up: one more valid event goes through
        client = publisher(broker_config, "after")
        client.publish(NodeTopics(site, "n0").events, make_event(site, "n0", 9999), qos=1).wait_for_publish(5)
        client.stop()
        assert wait_until(lambda: count(store, EventRow) == 2001, 10)
        store.close()


def test_two_hubs_split_the_load_through_a_shared_subscription(broker_config: BrokerConfig, tmp_path: Path) -> None:
    site = unique_site()
    first = hub_config(broker_config, tmp_path, site)
    second = hub_config(broker_config, tmp_path, site, hub_id=f"h{site}-2")
    with running_hub(first) as hub_a, running_hub(second) as hub_b:
        store = Store(first.db_url)
        client = publisher(broker_config, "split")
        infos = [
            client.publish(NodeTopics(site, f"n{n % 3}").events, make_event(site, f"n{n % 3}", n), qos=1)
            for n in range(600)
        ]
        for info in infos:
            info.wait_for_publish(10)
        assert wait_until(lambda: count(store, EventRow) == 600, 30)
        assert hub_a.ingest is not None and hub_b.ingest is not None
        shares = (hub_a.ingest.stats.received, hub_b.ingest.stats.received)
        assert min(shares) > 0 and sum(shares) == 600, shares
        assert count(store, EventMessage) == 600
        client.stop()
        store.close()


def test_lifecycle_folds_out_of_order_and_alert_once(broker_config: BrokerConfig, tmp_path: Path) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site, alerts={"cooldown_s": 3600})
    start = utc_now()
    events = [
        make_event(site, "door", 1, kind="end", label="no_mask", score=0.7, ts=start + timedelta(seconds=5)),
        make_event(site, "door", 1, kind="new", label="mask", score=0.6, ts=start),
        make_event(
            site, "door", 1, kind="update", label="no_mask", score=0.93, ts=start + timedelta(seconds=2), snapshot=True
        ),
        make_event(site, "door", 2, kind="new", label="no_mask", score=0.8, ts=start),
    ]
    with alert_watcher(broker_config, site) as inbox, running_hub(config):
        store = Store(config.db_url)
        client = publisher(broker_config, "door")
        for ev in events:
            client.publish(NodeTopics(site, "door").events, ev, qos=1)
        assert wait_until(lambda: count(store, EventMessage) == 4)
        with store.session() as session:
            row = session.get(EventRow, f"{site}-door-00001")
            assert row is not None
            assert (row.label, row.best_score, row.messages, row.state) == ("no_mask", 0.93, 3, "ended")
            assert row.first_seen == start and row.mask_score == 0.6 and row.snapshot_expected
        # one alert for event 1; event 2 of the same node falls in the cooldown
        assert wait_until(lambda: len(inbox) == 1, 5)
        time.sleep(0.3)
        alert = parse(Alert, inbox[0].payload)
        assert alert.kind == "no_mask" and alert.event_id in (f"{site}-door-00001", f"{site}-door-00002")
        assert count(store, AlertRow) == 1
        assert count(store, EventRow, EventRow.alerted.is_(True)) == 2
        client.stop()
        store.close()


def test_snapshots_registry_and_rejections(broker_config: BrokerConfig, tmp_path: Path) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site)
    topics = NodeTopics(site, "cam")
    jpeg = b"\xff\xd8\xff\xe0" + os.urandom(2000) + b"\xff\xd9"
    state = NodeState(
        site=site,
        node="cam",
        ts=utc_now(),
        threshold=0.5,
        detect=True,
        model="mask-v3",
        servo=ServoState(angle=0.0, mode="sweep", min_deg=-90, max_deg=90),
    )
    with running_hub(config):
        store = Store(config.db_url)
        client = publisher(broker_config, "cam")
        client.publish(topics.status, b"online", qos=1, retain=True)
        client.publish(topics.state, state, qos=1, retain=True)
        client.publish(topics.events, make_event(site, "cam", 1, snapshot=True), qos=1)
        client.publish(topics.snapshot(f"{site}-cam-00001"), jpeg, qos=1)
        client.publish(topics.snapshot("not-a-jpeg"), b"GIF89a....", qos=1)
        client.publish(topics.status, b"sleepy", qos=1)
        client.publish(NodeTopics(site, "other").events, make_event(site, "cam", 2), qos=1)  # wrong topic
        assert wait_until(lambda: count(store, RejectedRow) == 3 and count(store, SnapshotRow) == 1)
        with store.session() as session:
            node = session.get(NodeRow, (site, "cam"))
            assert node is not None and node.online is True and node.model == "mask-v3"
            snap = session.get(SnapshotRow, f"{site}-cam-00001")
            assert snap is not None and (Path(config.snapshot_dir) / snap.path).read_bytes() == jpeg
        assert store.counters("rejected.") == {"rejected.schema": 2, "rejected.topic": 1}
        client.publish(topics.status, b"offline", qos=1, retain=True)
        assert wait_until(lambda: Store(config.db_url).counters().get("messages.status") == 3)
        with store.session() as session:
            assert session.get(NodeRow, (site, "cam")).online is False  # type: ignore[union-attr]
        client.stop()
        store.close()


def test_storage_error_holds_the_batch_until_storage_is_back(broker_config: BrokerConfig, tmp_path: Path) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site)
    blocker = Path(config.snapshot_dir) / site  # a file where the snapshot folder must go
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a folder")
    with running_hub(config) as hub:
        store = Store(config.db_url)
        client = publisher(broker_config, "cam")
        client.publish(NodeTopics(site, "cam").events, make_event(site, "cam", 1, snapshot=True), qos=1)
        client.publish(NodeTopics(site, "cam").snapshot(f"{site}-cam-00001"), b"\xff\xd8jpeg\xff\xd9", qos=1)
        assert wait_until(lambda: hub.ingest is not None and hub.ingest.stats.storage_errors >= 2, 10)
        assert count(store, EventRow) == 0  # nothing committed, nothing acknowledged
        blocker.unlink()
        assert wait_until(lambda: count(store, SnapshotRow) == 1 and count(store, EventRow) == 1, 15)
        client.stop()
        store.close()


class TrippingWriter:
    """The hub's own writer, failing as a bug would on any batch that holds ``marker`` (nothing stored then)."""

    def __init__(self, writer: Any, marker: bytes) -> None:
        self.writer, self.marker = writer, marker

    def write(self, messages: list[tuple[str, bytes]], now: datetime) -> Any:
        if any(self.marker in payload for _, payload in messages):
            raise RuntimeError("a writer bug that this payload triggers")
        return self.writer.write(messages, now)


def test_a_message_that_trips_a_writer_bug_holds_back_only_itself(broker_config: BrokerConfig, tmp_path: Path) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site, ingest={"batch_ms": 300})
    with running_hub(config) as hub:
        assert hub.ingest is not None
        hub.ingest.writer = TrippingWriter(hub.ingest.writer, b"-poison-")
        store = Store(config.db_url)
        client = publisher(broker_config, "cam")
        for n in range(1, 4):
            client.publish(NodeTopics(site, "cam").events, make_event(site, "cam", n), qos=1)
        client.publish(NodeTopics(site, "poison").events, make_event(site, "poison", 1), qos=1)
        for n in range(4, 7):
            client.publish(NodeTopics(site, "cam").events, make_event(site, "cam", n), qos=1)
        assert wait_until(lambda: count(store, EventRow) == 6 and hub.ingest.stats.failed_messages == 1, 15), (
            count(store, EventRow),
            hub.ingest.stats.failed_messages,
        )
        assert count(store, EventRow, EventRow.node == "poison") == 0
        assert hub.ingest.stats.batches >= 2  # the valid messages were committed apart from the bad one
        client.stop()
        store.close()


def test_alerts_require_the_minimum_face_score(broker_config: BrokerConfig, tmp_path: Path) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site, alerts={"cooldown_s": 0, "min_face_score": 0.8})
    start = utc_now()
    events = [
        make_event(site, "door", 1, label="no_mask", face_score=0.4, ts=start),  # not a face: no alert
        make_event(site, "door", 2, label="no_mask", face_score=0.95, ts=start),
        make_event(site, "door", 3, label="no_mask", ts=start),  # an older node without the score
        make_event(site, "door", 4, label="no_mask", face_score=0.5, ts=start),
        make_event(
            site,
            "door",
            4,
            kind="update",
            label="no_mask",
            face_score=0.9,  # verified later
            ts=start + timedelta(seconds=1),
        ),
    ]
    with alert_watcher(broker_config, site) as inbox, running_hub(config):
        store = Store(config.db_url)
        client = publisher(broker_config, "door")
        for ev in events[:4]:
            client.publish(NodeTopics(site, "door").events, ev, qos=1)
        assert wait_until(lambda: count(store, EventMessage) == 4)
        assert wait_until(lambda: len(inbox) == 2, 5)
        client.publish(NodeTopics(site, "door").events, events[4], qos=1)
        assert wait_until(lambda: len(inbox) == 3, 5)
        time.sleep(0.3)
        assert sorted(parse(Alert, m.payload).event_id for m in inbox) == [f"{site}-door-{n:05d}" for n in (2, 3, 4)]
        with store.session() as session:
            first = session.get(EventRow, f"{site}-door-00001")
            assert first is not None and first.face_score == 0.4 and not first.alerted
            later = session.get(EventRow, f"{site}-door-00004")
            assert later is not None and later.face_score == 0.9 and later.alerted
        client.stop()
        store.close()


def test_offline_node_raises_alert(broker_config: BrokerConfig, tmp_path: Path) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site, alerts={"offline_after_s": 0.5, "check_every_s": 0.2})
    with alert_watcher(broker_config, site) as inbox, running_hub(config):
        client = publisher(broker_config, "gone")
        client.publish(NodeTopics(site, "gone").status, b"offline", qos=1, retain=True)
        assert wait_until(lambda: len(inbox) == 1, 10)
        alert = parse(Alert, inbox[0].payload)
        assert (alert.kind, alert.node) == ("node_offline", "gone")
        time.sleep(0.6)
        assert len(inbox) == 1  # once per outage
        client.stop()


def _write_config(path: Path, config_data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(config_data))
    return path


@pytest.mark.slow
def test_sigkill_while_in_flight_loses_nothing(broker_config: BrokerConfig, tmp_path: Path) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site)
    cfg_file = _write_config(tmp_path / "hub.yaml", config.model_dump(mode="json"))
    command = [sys.executable, "-m", "shared.cli", "hub", "--config", str(cfg_file)]
    log_file = open(tmp_path / "hub.log", "ab")  # noqa: SIM115 (kept open across two hub runs)
    hub = subprocess.Popen(command, stderr=log_file)
    store = Store(config.db_url)
    try:
        assert wait_until(lambda: b"API on" in (tmp_path / "hub.log").read_bytes(), 30)
        client = publisher(broker_config, "flight")
        topic = NodeTopics(site, "cam").events
        infos = []
        for n in range(1000):
            infos.append(client.publish(topic, make_event(site, "cam", n), qos=1))
            if n == 300:  # the hub is busy with the first ones: kill it mid-stream
                assert wait_until(lambda: count(store, EventRow) > 0, 10)
                hub.send_signal(signal.SIGKILL)
                hub.wait(10)
            time.sleep(0.001)
        for info in infos:
            info.wait_for_publish(20)
        assert 0 < count(store, EventRow) < 1000
        hub = subprocess.Popen(command, stderr=log_file)
        assert wait_until(lambda: count(store, EventRow) == 1000, 60), count(store, EventRow)
        time.sleep(0.5)
        assert count(store, EventMessage) == 1000
        assert count(store, EventRow, EventRow.messages != 1) == 0
        client.stop()
    finally:
        hub.send_signal(signal.SIGTERM)
        assert hub.wait(20) == 0
        log_file.close()
        store.close()
    assert b"upgrading database" in (tmp_path / "hub.log").read_bytes()


def test_quiet_hours_events_are_stored_but_raise_no_alert(broker_config: BrokerConfig, tmp_path: Path) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site, alerts={"cooldown_s": 0})
    start = utc_now()
    quiet = [
        make_event(site, "door", 1, label="no_mask", ts=start).model_copy(update={"quiet": True}),
        make_event(site, "door", 1, kind="end", label="no_mask", ts=start + timedelta(seconds=2)).model_copy(
            update={"quiet": True}
        ),
    ]
    loud = make_event(site, "door", 2, label="no_mask", ts=start + timedelta(seconds=3))
    with alert_watcher(broker_config, site) as inbox, running_hub(config):
        store = Store(config.db_url)
        client = publisher(broker_config, "door")
        for ev in [*quiet, loud]:
            client.publish(NodeTopics(site, "door").events, ev, qos=1)
        assert wait_until(lambda: count(store, EventMessage) == 3)
        assert wait_until(lambda: len(inbox) == 1, 5)
        time.sleep(0.3)  # no second alert follows
        assert [parse(Alert, m.payload).event_id for m in inbox] == [f"{site}-door-00002"]
        with store.session() as session:
            stored = session.get(EventRow, f"{site}-door-00001")
            assert stored is not None and stored.label == "no_mask" and not stored.alerted
            payloads = session.scalars(select(EventMessage.payload).where(EventMessage.event_id == stored.id)).all()
            assert [json.loads(p)["quiet"] for p in payloads] == [True, True]
        client.stop()
        store.close()
