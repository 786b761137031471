"""End-to-end delivery of a real node: capture-to-stored latency and the recovery after a broker crash.

Real processes: Mosquitto, ``maskwatch hub``, ``maskwatch edge --once --profile crowd`` on street photos of the
team's scene dataset (snapshots on). Three runs of the same photos, in the same session:

* **undisturbed** (``delivery: hub``): capture-to-stored latency of every ``new`` event (hub's stored time -
  the event's ``ts``, the capture time of its frame), next to capture-to-received at a bare QoS 1 subscriber of
  the same messages (the baseline: what the broker alone adds);
* **broker crash** (``delivery: hub``): the broker, which saves its state every 10 minutes, is SIGKILLed once an
  eighth of the events are stored and restarted 2 s later; recovery = broker back -> last event stored, next to
  the undisturbed run's time for the same remaining share of the events; events lost (0 expected);
* **broker crash, delivery: broker** (the rule before acks): the same crash; events lost.

Writes ``bench/results/delivery.json``.

    python bench/delivery.py [--photos 40]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]

from conftest import SCENES  # noqa: E402
from fault_support import EdgeProcess, HubProcess  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.exc import DBAPIError  # noqa: E402

from bench.common import percentiles, write_result  # noqa: E402
from devsite.broker import LocalMosquitto  # noqa: E402
from shared.config import BrokerConfig  # noqa: E402
from shared.mqtt import MqttClient, Received  # noqa: E402
from shared.topics import node_filter  # noqa: E402

log = logging.getLogger("bench.delivery")
NODE = "door-1"


def broker_settings(broker: LocalMosquitto, *, reconnect_min_s: float, reconnect_max_s: float) -> BrokerConfig:
    return BrokerConfig(
        host=broker.host,
        port=broker.port,
        keepalive_s=5,
        reconnect_min_s=reconnect_min_s,
        reconnect_max_s=reconnect_max_s,
    )


def stored_times(db_url: str, site: str) -> list[tuple[str, float, float]]:
    """(type, capture ts, stored at) of every stored event message of ``site``, POSIX seconds."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT m.payload, m.received_at FROM event_messages m JOIN events e "
                    "ON e.id = m.event_id WHERE e.site = :site"
                ),
                {"site": site},
            ).all()
    except DBAPIError:  # tables not created yet
        return []
    finally:
        engine.dispose()
    out = []
    for payload, received_at in rows:
        message = json.loads(payload)
        stored = received_at if isinstance(received_at, datetime) else datetime.fromisoformat(str(received_at))
        out.append((message["type"], _posix(message["ts"]), stored.replace(tzinfo=UTC).timestamp()))
    return out


def _posix(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def run(workdir: Path, photos: Path, *, delivery: str, crash_at: int | None) -> dict[str, object]:
    """One run of the photos; with ``crash_at``, SIGKILL the broker once that many event rows are stored."""
    site = f"b{int(time.time() * 1000) % 10**9}"
    with LocalMosquitto(extra_config="autosave_interval 600") as broker:
        hub = HubProcess(broker_settings(broker, reconnect_min_s=2, reconnect_max_s=4), workdir, [site]).start()
        received: list[tuple[str, float, float]] = []
        lock = threading.Lock()

        def on_event(message: Received) -> None:
            data = json.loads(message.payload)
            with lock:
                received.append((data["type"], _posix(data["ts"]), time.time()))

        bare = MqttClient(broker_settings(broker, reconnect_min_s=0.2, reconnect_max_s=1), f"bench-bare-{site}")
        bare.subscribe(node_filter("events", site), on_event, qos=1)
        bare.start()
        assert bare.wait_connected(10)
        if crash_at is not None:
            broker.restart()  # a clean stop saves the hub's session: the crash loses only what came after
            assert hub.healthy() and bare.wait_connected(10)
        node = EdgeProcess(
            broker_settings(broker, reconnect_min_s=0.2, reconnect_max_s=1),
            workdir,
            site,
            NODE,
            once=True,
            settings={
                "source": str(photos),
                "profile": "crowd",
                "delivery": delivery,
                "snapshot": {"mode": "on"},
                "outbox": {"drain_timeout_s": 120, "resend_after_s": 2, "resend_max_s": 8},
            },
        )
        started = time.time()
        node.start()
        back_at = None
        try:
            if crash_at is not None:
                while len({m[1] for m in stored_times(hub.db_url, site)}) < crash_at and node.alive:
                    time.sleep(0.05)
                broker.stop(kill=True)
                time.sleep(2)
                broker.start()
                back_at = time.time()
            code = node.wait(300)
            time.sleep(1)
            stored = stored_times(hub.db_url, site)
        finally:
            node.stop()
            hub.stop()
            bare.stop()
    return {
        "exit_code": code,
        "started": started,
        "back_at": back_at,
        "stored": stored,
        "received": received,
        "events": _event_rows(hub.db_url, site),
    }


def _event_rows(db_url: str, site: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM events WHERE site = :site"), {"site": site}).scalar())
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=40, help="street photos the node streams")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    images = sorted((SCENES / "images").glob("*.jpg"))[: args.photos]
    if not images:
        print(f"no scene photos in {SCENES} (set MASKWATCH_SHARED)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        photos = Path(tmp) / "photos"
        photos.mkdir()
        for image in images:
            (photos / image.name).symlink_to(image)
        calm = run(Path(tmp) / "calm", photos, delivery="hub", crash_at=None)
        total = int(calm["events"])  # type: ignore[arg-type]
        crash = run(Path(tmp) / "crash", photos, delivery="hub", crash_at=max(1, total // 8))
        old_rule = run(Path(tmp) / "old", photos, delivery="broker", crash_at=max(1, total // 8))

    stored_new = [(s - ts) * 1000 for kind, ts, s in calm["stored"] if kind == "new"]  # type: ignore[union-attr]
    bare_new = [(r - ts) * 1000 for kind, ts, r in calm["received"] if kind == "new"]  # type: ignore[union-attr]
    calm_stored = sorted(s for _k, _ts, s in calm["stored"])  # type: ignore[union-attr]
    # the undisturbed run's time for the share of messages the crash run still had to store after the broker came back
    crash_stored = sorted(s for _k, _ts, s in crash["stored"])  # type: ignore[union-attr]
    back_at = float(crash["back_at"])  # type: ignore[arg-type]
    remaining = sum(1 for s in crash_stored if s >= back_at)
    recovery_s = crash_stored[-1] - back_at
    calm_same_share_s = calm_stored[-1] - calm_stored[max(0, len(calm_stored) - remaining - 1)]
    stored_p, bare_p = percentiles(stored_new), percentiles(bare_new)
    figures = {
        "photos": args.photos,
        "events_stored_undisturbed": total,
        "event_messages_undisturbed": len(calm_stored),
        "capture_to_stored_p50_ms": stored_p["p50_ms"],
        "capture_to_stored_p99_ms": stored_p["p99_ms"],
        "capture_to_stored_max_ms": stored_p["max_ms"],
        "new_events_measured": len(stored_new),
        "crash_run_events_stored": crash["events"],
        "crash_run_exit_code": crash["exit_code"],
        "crash_run_events_lost": total - int(crash["events"]),  # type: ignore[arg-type]
        "recovery_s_broker_back_to_last_stored": round(recovery_s, 2),
        "messages_stored_after_broker_back": remaining,
    }
    baseline = {
        "capture_to_bare_subscriber_p50_ms": bare_p["p50_ms"],
        "capture_to_bare_subscriber_p99_ms": bare_p["p99_ms"],
        "undisturbed_time_for_the_same_messages_s": round(calm_same_share_s, 2),
        "delivery_broker_crash_run_events_stored": old_rule["events"],
        "delivery_broker_crash_run_events_lost": total - int(old_rule["events"]),  # type: ignore[arg-type]
        "delivery_broker_crash_run_exit_code": old_rule["exit_code"],
    }
    ratios = {
        "capture_to_stored_vs_bare_subscriber_p50": round(stored_p["p50_ms"] / max(bare_p["p50_ms"], 0.01), 2),
        "capture_to_stored_vs_bare_subscriber_p99": round(stored_p["p99_ms"] / max(bare_p["p99_ms"], 0.01), 2),
        "recovery_vs_undisturbed_same_messages": round(recovery_s / max(calm_same_share_s, 0.01), 2),
        "events_kept_after_crash_hub_delivery": round(int(crash["events"]) / total, 3),  # type: ignore[arg-type]
        "events_kept_after_crash_broker_delivery": round(int(old_rule["events"]) / total, 3),  # type: ignore[arg-type]
    }
    write_result(
        "delivery",
        "Delivery: capture-to-stored latency and recovery after a broker crash",
        figures,
        baseline,
        ratios,
        "Real processes (Mosquitto saving every 10 min, hub, edge --once --profile crowd on street photos, "
        "snapshots on). Latency: hub's stored time (batch time) - event ts (capture of its frame), 'new' "
        "messages; the baseline is the same messages' arrival at a bare QoS 1 subscriber in the same run. "
        "Crash runs: the broker is SIGKILLed once 1/8 of the events are stored, restarted 2 s later; node "
        "reconnect 0.2-1 s, hub 2-4 s, resend after 2 s doubling to 8 s. Recovery: broker back -> last "
        "event message stored, against the undisturbed run's time for the same number of final messages.",
    )
    print(json.dumps(ratios))
    return 0 if crash["exit_code"] == 0 and figures["crash_run_events_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
