"""Event export: keyset pages over a real SQLite file, ``maskwatch events --all`` in csv/json/jsonl, the API's
``/api/events.<format>``, and 100,000 events exported exactly once in flat memory."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import warnings
from datetime import timedelta
from pathlib import Path

import pytest
from hub_support import make_event

from hub.api import HubServices, create_app
from hub.config import HubConfig
from hub.storage.database import Store
from hub.storage.events import EventFilter, EventIn, EventLog, SnapshotIn, fold
from hub.storage.nodes import Registry
from hub.storage.rows import EventRow
from hub.views import CSV_COLUMNS
from shared.cli import main
from shared.messages import utc_now

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette: "use httpx2" notice
    from fastapi.testclient import TestClient

T0 = utc_now().replace(microsecond=0) - timedelta(hours=1)


def bulk_insert(store: Store, site: str, count: int, *, same_time_every: int = 1) -> None:
    """``count`` events of ``site`` folded by the storage layer and inserted in one executemany; every
    ``same_time_every`` consecutive events share a timestamp (ties the listing order must break by id)."""
    now = utc_now()
    for start in range(0, count, 20_000):
        items = (
            EventIn(
                make_event(
                    site,
                    "n",
                    n,
                    label="no_mask" if n % 3 == 0 else "mask",
                    ts=T0 + timedelta(milliseconds=n // same_time_every),
                ),
                now,
            )
            for n in range(start, min(count, start + 20_000))
        )
        with store.transaction() as session:
            session.execute(store.insert(EventRow.__table__), list(fold(items, now).values()))


def test_pages_list_every_event_once_in_listing_order_across_ties(store: Store, tmp_path: Path) -> None:
    bulk_insert(store, "hq", 103, same_time_every=10)  # pages of 7 end inside runs of equal first_seen
    log = EventLog(store, tmp_path)
    paged = [row.id for page in log.pages(page_size=7) for row in page.rows]
    listed = [row.id for row in log.query(limit=1000)[0]]
    assert paged == listed and len(set(paged)) == 103
    assert [row.id for page in log.pages(page_size=7, limit=20) for row in page.rows] == listed[:20]
    no_mask = [row.id for page in log.pages(EventFilter(label="no_mask"), page_size=4) for row in page.rows]
    assert no_mask == [row.id for row in log.query(EventFilter(label="no_mask"), limit=1000)[0]]


def test_an_event_stored_during_an_export_neither_repeats_nor_shifts_the_others(store: Store, tmp_path: Path) -> None:
    bulk_insert(store, "hq", 30)
    log = EventLog(store, tmp_path)
    pages = log.pages(page_size=10)
    seen = [row.id for row in next(pages).rows]
    with store.transaction() as session:  # newer than every listed event: lands before the cursor
        log.write(session, [EventIn(make_event("hq", "late", 1, ts=T0 + timedelta(hours=1)), utc_now())])
    seen += [row.id for page in pages for row in page.rows]
    assert len(seen) == len(set(seen)) == 30


@pytest.fixture
def seeded(tmp_path: Path) -> tuple[HubConfig, list[str]]:
    config = HubConfig(db_url=f"sqlite:///{tmp_path / 'hub.db'}", snapshot_dir=tmp_path / "snaps")
    store = Store(config.db_url)
    store.migrate()
    bulk_insert(store, "hq", 250, same_time_every=3)
    log = EventLog(store, config.snapshot_dir)
    with store.transaction() as session:
        log.save_snapshots(session, [SnapshotIn("hq", "n", "hq-n-00004", b"\xff\xd8jpeg\xff\xd9", T0)])
    ids = [row.id for row in log.query(limit=1000)[0]]
    store.close()
    return config, ids


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl"])
def test_cli_exports_all_events_paged_in_every_format(
    seeded: tuple[HubConfig, list[str]], tmp_path: Path, fmt: str
) -> None:
    config, ids = seeded
    out = tmp_path / f"all.{fmt}"
    argv = ["events", "--db", config.db_url, "--all", "--format", fmt, "--limit", "7", "--output", str(out)]
    assert main(argv) == 0
    text = out.read_text()
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        assert tuple(rows[0]) == CSV_COLUMNS
        items: list[dict[str, object]] = list(rows)
    elif fmt == "json":
        items = json.loads(text)
    else:
        items = [json.loads(line) for line in text.splitlines()]
    assert [item["id"] for item in items] == ids  # every event once, newest first
    snapshot = {str(item["id"]): item["snapshot" if fmt == "csv" else "snapshot_url"] for item in items}
    assert snapshot["hq-n-00004"] not in (None, "0") and snapshot["hq-n-00005"] in (None, "0")
    assert not list(tmp_path.glob("*.part"))


def test_cli_csv_is_the_api_csv_and_the_api_exports_json_and_jsonl(
    seeded: tuple[HubConfig, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, ids = seeded
    store = Store(config.db_url)
    app = create_app(
        HubServices(config=config, store=store, events=EventLog(store, config.snapshot_dir), registry=Registry(store))
    )
    with TestClient(app) as client:
        assert main(["events", "--db", config.db_url, "--all", "--format", "csv", "--label", "no_mask"]) == 0
        assert capsys.readouterr().out == client.get("/api/events.csv", params={"label": "no_mask"}).text
        assert [e["id"] for e in client.get("/api/events.json").json()] == ids
        lines = client.get("/api/events.jsonl", params={"limit": 5}).text.splitlines()
        assert [json.loads(line)["id"] for line in lines] == ids[:5]
        assert client.get("/api/events.json", params={"site": "nowhere"}).json() == []
        assert client.get("/api/events.xml").status_code == 422
        assert client.get("/api/events.jsonl", params={"limit": 0}).status_code == 422
    store.close()


def test_cli_without_all_exports_one_page_and_rejects_contradictions(
    seeded: tuple[HubConfig, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    config, ids = seeded
    assert main(["events", "--db", config.db_url, "--format", "jsonl", "--limit", "12"]) == 0
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == ids[:12]
    assert main(["events", "--db", config.db_url, "--all"]) == 2
    assert "--format" in capsys.readouterr().err
    assert main(["events", "--db", config.db_url, "--json", "--format", "csv"]) == 2
    assert "disagree" in capsys.readouterr().err


def test_a_failed_export_leaves_no_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.csv"
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert main(["events", "--db", missing, "--all", "--format", "csv", "--output", str(out)]) == 1
    assert "no hub database" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _export_peak_rss(db_url: str, output: Path, *filters: str) -> int:
    """Peak RSS (KiB) of one ``maskwatch events --all --format jsonl`` process, and the ids it wrote."""
    argv = ["events", "--db", db_url, "--all", "--format", "jsonl", "--limit", "1000", "--output", str(output)]
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", *argv, *filters], env={**os.environ, "PYTHONPATH": os.getcwd()}
    )
    _pid, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0
    return usage.ru_maxrss


def test_100k_events_export_exactly_once_in_flat_memory(store: Store, tmp_path: Path) -> None:
    bulk_insert(store, "ten", 10_000, same_time_every=7)
    bulk_insert(store, "rest", 90_000, same_time_every=7)
    small, large = tmp_path / "10k.jsonl", tmp_path / "100k.jsonl"
    rss_small = _export_peak_rss(store.url, small, "--site", "ten")
    rss_large = _export_peak_rss(store.url, large)
    ids = [json.loads(line)["id"] for line in large.read_text().splitlines()]
    assert len(ids) == 100_000
    assert set(ids) == {f"ten-n-{n:05d}" for n in range(10_000)} | {f"rest-n-{n:05d}" for n in range(90_000)}
    assert len(small.read_text().splitlines()) == 10_000
    # The 100k output is about 10x the 10k one; held in memory it would add tens of MiB. Paged, the peak
    # stays within a few MiB (one page of rows and text).
    grown_kib = rss_large - rss_small
    print(f"peak RSS: 10k events {rss_small} KiB, 100k events {rss_large} KiB ({large.stat().st_size} bytes out)")
    assert grown_kib < large.stat().st_size // 1024 // 4, (rss_small, rss_large)
