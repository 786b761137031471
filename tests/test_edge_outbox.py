"""The persistent outbox (real SQLite files) and lossless delivery through broker and edge-process restarts."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from devsite.broker import LocalMosquitto
from edge.delivery.outbox import Courier, Outbox
from shared.config import BrokerConfig
from shared.errors import OutboxError
from shared.messages import Event, parse, utc_now
from shared.mqtt import MqttClient
from shared.topics import NodeTopics
from tests.conftest import FACE_MASK, need

TOPICS = NodeTopics("t", "box")


def event_bytes(n: int) -> bytes:
    return Event(
        type="new", id=f"t-box-{n:05d}", site="t", node="box", ts=utc_now(), label="mask", score=0.9, box=(1, 1, 20, 20)
    ).to_json()


def test_fifo_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path) as box:
        seqs = [box.put(TOPICS.events, event_bytes(i)) for i in range(5)]
        box.remove(seqs[1])
    with Outbox(path) as box:
        assert box.depth == 4
        assert [parse(Event, m.payload).id for m in box.pending()] == [f"t-box-{i:05d}" for i in (0, 2, 3, 4)]
        assert box.put(TOPICS.events, event_bytes(9)) > seqs[-1]


def test_bound_drops_oldest_first_and_counts_it_persistently(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path, max_messages=10) as box:
        for i in range(25):
            box.put(TOPICS.events, event_bytes(i))
        assert box.depth == 10 and box.dropped == 15
        assert parse(Event, box.pending()[0].payload).id == "t-box-00015"
    with Outbox(path, max_messages=10) as box:
        assert box.dropped == 15


def test_corrupt_outbox_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(OutboxError, match=r"o\.sqlite is unusable .*move it aside"):
        Outbox(path)
    assert path.read_bytes().startswith(b"this is not a database")  # left as found


def test_broker_killed_mid_stream_every_event_arrives_once_in_order(tmp_path: Path) -> None:
    broker = LocalMosquitto().start()
    try:
        cfg = BrokerConfig(host=broker.host, port=broker.port, keepalive_s=5, reconnect_min_s=0.1, reconnect_max_s=0.5)
        received: list[str] = []
        sub = MqttClient(cfg, "t-sub-kill", persistent=True)
        sub.subscribe(TOPICS.events, lambda m: received.append(parse(Event, m.payload).id), qos=1)
        sub.start()
        assert sub.wait_connected(5)
        box = Outbox(tmp_path / "o.sqlite")
        pub: MqttClient
        courier = Courier(
            box, lambda t, p, q: pub.publish(t, p, qos=q), lambda: pub.connected, delivery="broker", resend_after_s=2
        )
        pub = MqttClient(
            cfg, "t-edge-kill", persistent=True, on_publish=courier.acknowledged, on_connect=courier.reconnected
        )
        pub.start()
        assert pub.wait_connected(5)
        stop = threading.Event()
        delivery = threading.Thread(target=courier.run, args=(stop,), name="delivery")
        delivery.start()
        total = 150
        for i in range(total):
            box.put(TOPICS.events, event_bytes(i))
            courier.notify()
            if i == 50:
                broker.stop()  # SIGTERM: the subscriber's persistent session is saved
            if i == 100:
                broker.start()
            time.sleep(0.01)
        deadline = time.monotonic() + 20
        while (box.depth or len(set(received)) < total) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        delivery.join()
        pub.stop()
        sub.stop()
        unique = list(dict.fromkeys(received))
        assert unique == [f"t-box-{i:05d}" for i in range(total)]
        assert box.depth == 0
        assert courier.published >= total
        box.close()
    finally:
        broker.close()


def test_edge_process_killed_then_restarted_replays_the_outbox(tmp_path: Path) -> None:
    need(FACE_MASK)
    folder = tmp_path / "faces"
    folder.mkdir()
    for cls in ("with_mask", "without_mask"):
        for src in sorted((FACE_MASK / cls).iterdir())[:40]:
            (folder / f"{cls}-{src.name}").symlink_to(src)
    broker = LocalMosquitto()  # port reserved, not running: nothing can be acknowledged in the first run
    outbox = tmp_path / "outbox.sqlite"
    env = dict(os.environ, MASKWATCH_PIN_FACTORY="mock")
    base = [
        sys.executable,
        "-m",
        "shared.cli",
        "edge",
        "--broker",
        broker.address,
        "--site",
        "t",
        "--node",
        "proc",
        "--outbox",
        str(outbox),
        "--set",
        "broker.reconnect_max_s=1",
        "--set",
        "servo.enabled=false",
        "--set",
        "indicator.enabled=false",
        "--set",
        "delivery=broker",
    ]
    proc = subprocess.Popen([*base, "--source", str(folder)], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        depth = 0
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            if outbox.exists():
                with sqlite3.connect(outbox) as db:
                    has_table = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'outbox'").fetchone()
                    depth = db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] if has_table else 0
                if depth >= 10:
                    break
        assert depth >= 10, "the first run wrote no events"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    with sqlite3.connect(outbox) as db:
        stored = [
            parse(Event, bytes(p)).id
            for (p,) in db.execute(
                "SELECT payload FROM outbox WHERE topic = ? ORDER BY seq", (NodeTopics("t", "proc").events,)
            )
        ]
    assert stored
    broker.start()
    try:
        received: list[str] = []
        sub = MqttClient(BrokerConfig(host=broker.host, port=broker.port), "t-sub-proc")
        sub.subscribe(NodeTopics("t", "proc").events, lambda m: received.append(parse(Event, m.payload).id))
        sub.start()
        assert sub.wait_connected(5)
        blank = tmp_path / "blank"  # no face: the rerun only replays the outbox (an empty folder is a dead source)
        blank.mkdir()
        cv2.imwrite(str(blank / "wall.png"), np.full((120, 160, 3), 128, np.uint8))
        rerun = subprocess.run(
            [*base, "--source", str(blank), "--once"], env=env, capture_output=True, text=True, timeout=60
        )
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        time.sleep(0.3)
        sub.stop()
        # each id appears as new then end; after dropping repeats, the order of first sightings is kept
        assert list(dict.fromkeys(received)) == list(dict.fromkeys(stored))
        with sqlite3.connect(outbox) as db:
            assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0
    finally:
        broker.close()
