"""Two hubs share one site through an MQTT 5 ``$share`` subscription on one Mosquitto, writing to one PostgreSQL.

Every event is stored exactly once (the ``new`` and ``end`` of one id may land on different hubs and are
upserted into the same row). When one hub is killed mid-run the other goes on storing; Mosquitto 2.0 keeps a share
of the messages in the dead hub's session, stored once it is back (docs/scaling.md). Skipped when no
PostgreSQL answers on 127.0.0.1:5432 (user ``postgres``, trust auth); the test creates and drops its own database.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fault_support import EventTable, HubProcess, postgres_database

from bench.loadgen import LoadGen
from shared.config import BrokerConfig
from tests.polling import unique_site, wait_until

log = logging.getLogger(__name__)


pg_url = pytest.fixture(name="pg_url")(postgres_database)


def stable(value: Callable[[], int], quiet_s: float, timeout: float) -> bool:
    """Wait until ``value()`` stopped changing for ``quiet_s`` seconds."""
    last, since = value(), time.monotonic()

    def settled() -> bool:
        nonlocal last, since
        now = value()
        if now != last:
            last, since = now, time.monotonic()
        return time.monotonic() - since >= quiet_s

    return wait_until(settled, timeout, every=0.5)


def committed(hub: HubProcess) -> int:
    return int(hub.get("/api/stats")["ingest"]["committed"])


@pytest.mark.slow
def test_two_hubs_share_the_load_and_one_takes_over(broker_config: BrokerConfig, tmp_path: Path, pg_url: str) -> None:
    site = unique_site("m")
    group = f"g{site}"
    hubs = [HubProcess(broker_config, tmp_path / name, [site], db_url=pg_url, share_group=group) for name in "ab"]
    table = EventTable(pg_url)
    gen = LoadGen(broker_config, site, 10, rate_per_node=10, connections=2, lifecycle=True)
    try:
        for hub in hubs:  # one after the other: the first creates the schema
            hub.start()
        gen.start()
        runner = gen.run_in_background(count=1200)
        assert wait_until(lambda: all(committed(h) > 50 for h in hubs), 60), "both hubs take a share"
        hubs[1].kill()
        killed_at = len(gen.ids)
        runner.join(120)
        assert gen.wait_acked(30)
        after_kill = set(gen.ids[killed_at + 50 :])
        settled = stable(lambda: len(table.rows(site)), quiet_s=3, timeout=60)
        stored = set(table.rows(site))
        assert len(after_kill & stored) > 0.4 * len(after_kill), "the surviving hub goes on storing"
        held = set(gen.ids) - stored
        log.info(
            "survivor stored %d of %d events published after the kill; %d wait for the dead hub (settled: %s)",
            len(after_kill & stored),
            len(after_kill),
            len(held),
            settled,
        )
        # Mosquitto 2.0 keeps routing a share of the group's messages to the dead member's persistent session
        # (never acknowledged, so not lost): they are stored when that hub comes back (docs/scaling.md)
        hubs[1].start()
        expected = dict.fromkeys(gen.ids, 2)
        wait_until(lambda: table.rows(site) == expected, 60, every=0.5)
        rows = table.rows(site)
        assert set(rows) == set(gen.ids), f"lost: {len(set(gen.ids) - set(rows))}"
        assert rows == expected, f"miscounted: {[(k, v) for k, v in rows.items() if v != 2][:5]}"
        assert hubs[0].alive
    finally:
        gen.stop(clean=False)
        for hub in hubs:
            hub.stop()
        table.close()
