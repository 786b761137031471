"""The hub's writer process: restarted when it dies without losing or doubling an event, logs reach the hub,
and the in-process writer (``ingest.writer_process: false``) stores the same."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import pytest
from hub_support import hub_config, make_event, publisher, running_hub
from sqlalchemy import func, select

from hub.ingest.batch_core import WriterSettings
from hub.ingest.writer_process import WriterProcess
from hub.storage.database import Store
from hub.storage.rows import EventMessage, EventRow
from shared.config import BrokerConfig
from shared.errors import StorageError
from shared.messages import utc_now
from shared.topics import NodeTopics
from tests.polling import unique_site, wait_until


def count(store: Store, model: type, *where: object) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_killed_writer_is_restarted_and_every_event_is_stored_once(broker_config: BrokerConfig, tmp_path: Path) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site, ingest={"batch_size": 50, "batch_ms": 20})
    with running_hub(config) as hub:
        store = Store(config.db_url)
        writer = hub.parts.writer
        assert writer is not None and writer.pid is not None and writer.pid != os.getpid()
        first_pid = writer.pid
        client = publisher(broker_config, "cam")
        topic = NodeTopics(site, "cam").events

        def send() -> None:
            infos = [client.publish(topic, make_event(site, "cam", n), qos=1) for n in range(1500)]
            for info in infos:
                info.wait_for_publish(30)

        sender = threading.Thread(target=send)
        sender.start()
        assert wait_until(lambda: count(store, EventRow) >= 100, 20)
        os.kill(first_pid, signal.SIGKILL)
        sender.join(60)
        assert wait_until(lambda: count(store, EventRow) == 1500, 60), count(store, EventRow)
        assert writer.restarts >= 1 and writer.pid not in (None, first_pid)
        assert count(store, EventMessage) == 1500
        assert count(store, EventRow, EventRow.messages != 1) == 0
        client.stop()
        store.close()


def test_rejections_logged_by_the_writer_reach_the_hub_log(
    broker_config: BrokerConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site)
    with caplog.at_level(logging.WARNING), running_hub(config) as hub:
        client = publisher(broker_config, "cam")
        client.publish(NodeTopics(site, "cam").events, b'{"v": 1, "type": "new"', qos=1)
        assert wait_until(lambda: hub.ingest is not None and hub.ingest.stats.rejected["json"] == 1, 10)
        client.stop()
    records = [r for r in caplog.records if r.name == "hub.ingest.batch_core"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert f"rejected message on {NodeTopics(site, 'cam').events} (json)" in records[0].getMessage()


def test_2000_garbage_messages_log_five_lines_and_count_all(
    broker_config: BrokerConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage on a real broker: the rejection log is capped per reason and minute, the counters stay exact."""
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site)
    topic = NodeTopics(site, "cam").events
    with caplog.at_level(logging.WARNING), running_hub(config) as hub:
        client = publisher(broker_config, "cam")
        infos = [client.publish(topic, b"{garbage %d" % n, qos=1) for n in range(2000)]
        for info in infos:
            info.wait_for_publish(30)
        assert wait_until(lambda: hub.ingest is not None and hub.ingest.stats.rejected["json"] == 2000, 60)
        client.stop()
    lines = [r.getMessage() for r in caplog.records if r.name == "hub.ingest.batch_core"]
    assert len(lines) == 5 and all("(json)" in line for line in lines)
    store = Store(config.db_url)
    assert store.counters("rejected.") == {"rejected.json": 2000}
    store.close()


def test_in_process_writer_stores_events_and_alerts(broker_config: BrokerConfig, tmp_path: Path) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site, ingest={"writer_process": False})
    with running_hub(config) as hub:
        assert hub.parts.writer is None
        store = Store(config.db_url)
        client = publisher(broker_config, "cam")
        for n in range(20):
            client.publish(NodeTopics(site, "cam").events, make_event(site, "cam", n, label="no_mask"), qos=1)
        assert wait_until(lambda: count(store, EventRow, EventRow.alerted.is_(True)) == 20, 10)
        assert hub.ingest is not None and hub.ingest.stats.committed == 20
        client.stop()
        store.close()


def test_a_writer_that_cannot_open_the_database_says_why(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    settings = WriterSettings(
        db_url=f"sqlite:///{blocker / 'hub.db'}",
        snapshot_dir=tmp_path / "snaps",
        max_snapshot_bytes=10_000,
        rejected_max_rows=10,
        alert_cooldown_s=0,
        public_url="http://hub",
    )
    writer = WriterProcess(settings)
    with pytest.raises(Exception, match="writer process did not start: cannot open"):
        writer.start()
    assert writer.pid is None
    with pytest.raises(StorageError, match="did not start"):
        writer.write([], utc_now())
    assert writer.restarts == 1
