"""The hub database: migrations (SQLite WAL, PostgreSQL), lifecycle folding, retention, bounds, config."""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from datetime import timedelta, timezone
from pathlib import Path

import pytest
from hub_support import make_event
from sqlalchemy import func, inspect, select, text
from sqlalchemy.exc import OperationalError

from hub.config import HubConfig, hash_token
from hub.storage.database import Store
from hub.storage.events import EventIn, EventLog, SnapshotIn, fold
from hub.storage.nodes import NodeUpdate, Registry
from hub.storage.rejected import RejectedStore, RejectIn
from hub.storage.rows import AlertRow, EventMessage, EventRow, RejectedRow, SnapshotRow
from shared.cli import main
from shared.config import load_config
from shared.errors import ConfigError
from shared.messages import utc_now

PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
T0 = utc_now().replace(microsecond=0)


def head_revision() -> str:
    """The newest migration (the chain grows; tests that upgrade expect its end)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", "hub:migrations")
    return ScriptDirectory.from_config(config).get_current_head() or "base"


def test_migrate_creates_schema_in_wal_mode_and_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = Store(f"sqlite:///{tmp_path / 'sub' / 'hub.db'}")
    with caplog.at_level(logging.INFO, logger="hub.storage.database"):
        assert s.migrate() == head_revision()
        assert s.migrate() == head_revision()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("upgrading database") for m in messages)
    assert any("is up to date" in m for m in messages)
    assert {
        "events",
        "event_messages",
        "snapshots",
        "nodes",
        "alerts",
        "commands",
        "rejected",
        "counters",
        "alembic_version",
    } <= set(inspect(s.engine).get_table_names())
    s.close()
    assert sqlite3.connect(tmp_path / "sub" / "hub.db").execute("PRAGMA journal_mode").fetchone() == ("wal",)


def upgrade_to(store: Store, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "hub:migrations")
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def test_upgrade_from_0001_keeps_raw_messages(tmp_path: Path) -> None:
    s = Store(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade_to(s, "0001")
    with s.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO event_messages (digest, event_id, type, ts, label, score, payload, "
                "received_at) VALUES ('d1', 'e1', 'new', '2026-01-01 00:00:00.000000', 'mask', 0.9, "
                '\'{"v": 1, "id": "e1"}\', \'2026-01-01 00:00:00.000000\')'
            )
        )
    assert s.migrate() == head_revision()
    assert EventLog(s, tmp_path).raw_messages("e1") == [{"v": 1, "id": "e1"}]
    s.close()


def test_postgresql_migrate_and_upsert() -> None:
    probe = Store(PG_URL)
    try:
        with probe.engine.connect():
            pass
    except OperationalError:
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}")
    schema = f"hubtest_{uuid.uuid4().hex[:8]}"
    with probe.engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    s = Store(f"{PG_URL}?options=-csearch_path%3D{schema}")
    try:
        assert s.migrate() == head_revision()
        log = EventLog(s, Path("unused"))
        items = [
            EventIn(make_event("hq", "n", 1, kind="new", label="mask", score=0.6, ts=T0), T0),
            EventIn(make_event("hq", "n", 1, kind="end", label="no_mask", score=0.8, ts=T0 + timedelta(seconds=3)), T0),
        ]
        with s.transaction() as session:
            assert log.write(session, items[:1]).stored == 1
        with s.transaction() as session:
            assert log.write(session, items).duplicates == 1
        row = log.get("hq-n-00001")
        assert row is not None and (row.label, row.best_score, row.messages, row.state) == ("no_mask", 0.8, 2, "ended")
        assert log.label_counts(by_hour=True)[0][2] == T0.strftime("%Y-%m-%dT%H:00:00Z")
        registry = Registry(s)
        with s.transaction() as session:
            registry.apply(session, [NodeUpdate("hq", "n", "stats", T0, payload={}, clock_offset_s=-2.5)])
        with s.session() as session:
            assert registry.clock_offsets(session, [("hq", "n"), ("hq", "gone")]) == {("hq", "n"): -2.5}
    finally:
        s.close()
        with probe.engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        probe.close()


def test_unreachable_database_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hub", "--db", "postgresql+psycopg2://nobody@127.0.0.1:1/none"]) == 1
    assert "cannot open or upgrade the database" in capsys.readouterr().err


def test_fold_is_order_independent() -> None:
    msgs = [
        EventIn(make_event("hq", "n", 1, kind="new", label="mask", score=0.6, ts=T0), T0),
        EventIn(make_event("hq", "n", 1, kind="update", label="no_mask", score=0.9, ts=T0 + timedelta(seconds=1)), T0),
        EventIn(make_event("hq", "n", 1, kind="end", label="no_mask", score=0.7, ts=T0 + timedelta(seconds=1)), T0),
    ]
    forward, backward = fold(msgs, T0)["hq-n-00001"], fold(msgs[::-1], T0)["hq-n-00001"]
    assert forward == backward
    assert (forward["label"], forward["best_score"], forward["first_seen"], forward["ended_at"]) == (
        "no_mask",
        0.9,
        T0,
        T0 + timedelta(seconds=1),
    )


def test_redelivery_changes_nothing(store: Store) -> None:
    log = EventLog(store, Path("unused"))
    items = [EventIn(make_event("hq", "n", i), T0) for i in range(10)]
    with store.transaction() as session:
        first = log.write(session, items)
    with store.session() as session:
        before = [(r.id, r.messages, r.updated_at) for r in session.scalars(select(EventRow).order_by(EventRow.id))]
    with store.transaction() as session:
        again = log.write(session, items + items)
    assert (first.stored, again.stored, again.duplicates, again.touched) == (10, 0, 20, [])
    with store.session() as session:
        after = [(r.id, r.messages, r.updated_at) for r in session.scalars(select(EventRow).order_by(EventRow.id))]
    assert after == before


def test_times_are_stored_as_naive_utc_text_whatever_their_zone(store: Store) -> None:
    """One text format for every stored time (SQLAlchemy's SQLite format, UTC): string comparisons in
    filters and pruning depend on it, and both insert paths (executemany, insertmanyvalues) must use it."""
    local = (T0 + timedelta(microseconds=7)).astimezone(timezone(timedelta(hours=2)))
    with store.transaction() as session:
        EventLog(store, Path("unused")).write(session, [EventIn(make_event("hq", "n", 1, ts=local), T0)])
    expected = (T0 + timedelta(microseconds=7)).replace(tzinfo=None).isoformat(" ", "microseconds")
    with store.engine.connect() as connection:
        stored = connection.execute(
            text(
                "SELECT m.ts, m.received_at, e.first_seen, e.last_seen FROM event_messages m JOIN events e "
                "ON e.id = m.event_id"
            )
        ).one()
    assert tuple(stored) == (expected, T0.replace(tzinfo=None).isoformat(" ", "microseconds"), expected, expected)
    with store.session() as session:
        assert session.scalar(select(EventRow.first_seen)) == T0 + timedelta(microseconds=7)


def test_rejected_table_is_bounded(store: Store) -> None:
    rejected = RejectedStore(store)
    for batch in range(3):
        with store.transaction() as session:
            rejected.add(session, [RejectIn("t", "json", None, "bad", bytes([batch, n]), T0) for n in range(4)], 5)
    with store.session() as session:
        kept = list(session.scalars(select(RejectedRow.payload).order_by(RejectedRow.id)))
    assert kept == [bytes([1, 3]), bytes([2, 0]), bytes([2, 1]), bytes([2, 2]), bytes([2, 3])]
    assert store.counters("rejected.") == {"rejected.json": 12}
    with store.transaction() as session:
        rejected.add(session, [RejectIn("t", "oversize", None, "too big", b"x" * 1_000_000, T0)], 5)
    with store.session() as session:
        big = session.scalars(select(RejectedRow).order_by(RejectedRow.id.desc())).first()
    assert big is not None and len(big.payload) == 65536 and "payload of 1000000 bytes" in big.error


def test_prune_by_api_and_cli(store: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snaps = tmp_path / "snaps"
    log = EventLog(store, snaps)
    old, new = T0 - timedelta(days=40), T0 - timedelta(hours=1)  # "new" is older than the second prune
    with store.transaction() as session:
        log.write(
            session, [EventIn(make_event("hq", "n", 1, ts=old), old), EventIn(make_event("hq", "n", 2, ts=new), new)]
        )
        log.save_snapshots(
            session,
            [
                SnapshotIn("hq", "n", "hq-n-00001", b"\xff\xd8old", old),
                SnapshotIn("hq", "n", "hq-n-00002", b"\xff\xd8new", new),
            ],
        )
        RejectedStore(store).add(session, [RejectIn("t", "json", None, "bad", b"x", old)], 10)
        session.add(AlertRow(kind="no_mask", site="hq", node="n", ts=old, event_id="hq-n-00001"))
    assert store.prune(30, snaps) == {"event_messages": 1, "snapshots": 1, "events": 1, "alerts": 1, "rejected": 1}
    assert not (snaps / "hq" / "n" / "hq-n-00001.jpg").exists() and (snaps / "hq" / "n" / "hq-n-00002.jpg").exists()
    with store.session() as session:
        assert [r for r in session.scalars(select(EventRow.id))] == ["hq-n-00002"]
        assert session.scalar(select(func.count()).select_from(EventMessage)) == 1
        assert session.scalar(select(func.count()).select_from(SnapshotRow)) == 1
    assert main(["prune", "--db", store.url, "--days", "0.00001", "--snapshot-dir", str(snaps)]) == 0
    assert "events" in capsys.readouterr().out
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(EventRow)) == 0
    assert main(["prune", "--db", f"sqlite:///{tmp_path / 'empty.db'}"]) == 1  # no hub schema: clear error


def test_housekeeper_prunes_on_its_timer(store: Store, tmp_path: Path) -> None:
    from hub.services.alerts import Alerter
    from hub.services.housekeeping import Housekeeper
    from hub.storage.nodes import Registry

    log = EventLog(store, tmp_path)
    with store.transaction() as session:
        log.write(session, [EventIn(make_event("hq", "n", 1), T0 - timedelta(days=2))])
    config = HubConfig(
        db_url=store.url, snapshot_dir=tmp_path, retention={"days": 1, "interval_s": 0.2}, alerts={"check_every_s": 0.1}
    )
    keeper = Housekeeper(config, store, Registry(store), Alerter(None, cooldown_s=0, public_url="http://x"))
    keeper.start()
    try:
        deadline = time.monotonic() + 10
        while log.get("hq-n-00001") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.get("hq-n-00001") is None
        with store.transaction() as session:  # a later old event goes on the next round
            log.write(session, [EventIn(make_event("hq", "n", 2), T0 - timedelta(days=3))])
        deadline = time.monotonic() + 10
        while log.get("hq-n-00002") is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.get("hq-n-00002") is None
    finally:
        keeper.stop()


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "hub.yaml"
    path.write_text("ingest: {batch_size: 0}\nsites: [HQ]\nauth: {tokens: [{name: a, sha256: nothex}]}\nfoo: 1\n")
    with pytest.raises(ConfigError) as err:
        load_config(HubConfig, path)
    for key in ("ingest.batch_size", "sites", "auth.tokens.0.sha256", "foo: unknown key"):
        assert key in str(err.value)
    ok = HubConfig(auth={"tokens": [{"name": "ops", "sha256": "sha256:" + hash_token("t").upper()}]})
    assert ok.auth.tokens[0].sha256 == hash_token("t") and ok.auth.enabled


def test_new_token_prints_hash_only_in_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hub", "--new-token", "ops"]) == 0
    out = capsys.readouterr().out.splitlines()
    token = out[1].strip()
    assert f"{{name: ops, sha256: {hash_token(token)}}}" in out[3]
