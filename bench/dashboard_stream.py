"""Live-feed latency of the dashboard: event published by a node -> stored by the hub -> on ``/api/stream``.

* **stream**: a client reads the hub's Server-Sent Events (what the dashboard's pages follow) over HTTP;
  the time from a node's publish to the item's arrival (ingest batch, commit, feed, SSE).
* **baseline**: a bare MQTT subscriber on the same broker receiving the same events (the transport's floor).

Also reports the size of the dashboard's static files (what a phone downloads; no framework).
Writes ``bench/results/dashboard_stream.json``; ratios are baseline / stream (1.0 = no overhead).

    python bench/dashboard_stream.py [--count 300] [--rate 20]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.common import percentiles, write_result  # noqa: E402
from devsite.broker import LocalMosquitto, free_port  # noqa: E402
from hub.app import HubApp  # noqa: E402
from hub.config import HttpConfig, HubConfig  # noqa: E402
from hub.web import STATIC  # noqa: E402
from shared.config import BrokerConfig  # noqa: E402
from shared.messages import Event, utc_now  # noqa: E402
from shared.mqtt import MqttClient  # noqa: E402
from shared.topics import NodeTopics, node_filter  # noqa: E402

SITE, NODE = "bench", "door-1"


def read_stream(url: str, arrivals: dict[str, float], ready: threading.Event, stop: threading.Event) -> None:
    """Record the arrival time of every ``event`` item of the stream."""
    with httpx.Client(timeout=None) as client, client.stream("GET", url) as response:
        kind = ""
        for line in response.iter_lines():
            if line.startswith(": connected"):
                ready.set()
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "event":
                arrivals.setdefault(json.loads(line[6:])["id"], time.perf_counter())
            if stop.is_set():
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=300, help="events to publish")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp, LocalMosquitto() as broker:
        broker_config = BrokerConfig(host=broker.host, port=broker.port)
        port = free_port()
        hub = HubApp(
            HubConfig(
                broker=broker_config,
                db_url=f"sqlite:///{tmp}/hub.db",
                sites=[SITE],
                snapshot_dir=Path(tmp) / "snapshots",
                hub_id="bench-dashboard",
                http=HttpConfig(port=port),
            )
        )
        hub.start()
        bare: dict[str, float] = {}
        subscriber = MqttClient(broker_config, "bench-dashboard-bare")
        subscriber.subscribe(
            node_filter("events", SITE), lambda m: bare.setdefault(json.loads(m.payload)["id"], time.perf_counter())
        )
        publisher = MqttClient(broker_config, "bench-dashboard-node")
        streamed: dict[str, float] = {}
        ready, stop = threading.Event(), threading.Event()
        reader = threading.Thread(
            target=read_stream, args=(f"http://127.0.0.1:{port}/api/stream", streamed, ready, stop), daemon=True
        )
        try:
            for client in (subscriber, publisher):
                client.start()
                assert client.wait_connected(10)
            reader.start()
            assert ready.wait(10), "the stream did not open"
            sent: dict[str, float] = {}
            topic = NodeTopics(SITE, NODE).events
            for i in range(args.count):
                event = Event(
                    type="new",
                    id=f"bench-{i:05d}",
                    site=SITE,
                    node=NODE,
                    ts=utc_now(),
                    label="mask",
                    score=0.9,
                    box=(10, 10, 50, 50),
                )
                sent[event.id] = time.perf_counter()
                publisher.publish(topic, event, qos=1)
                time.sleep(1.0 / args.rate)
            deadline = time.monotonic() + 30
            while (len(streamed) < args.count or len(bare) < args.count) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            stop.set()
            for client in (publisher, subscriber):
                client.stop()
            hub.stop()
    lost = args.count - len(streamed)
    stream_ms = [(streamed[i] - t) * 1000 for i, t in sent.items() if i in streamed]
    bare_ms = [(bare[i] - t) * 1000 for i, t in sent.items() if i in bare]
    stream, baseline = percentiles(stream_ms), percentiles(bare_ms)
    assets = {p.name: p.stat().st_size for p in STATIC.iterdir() if p.is_file()}
    figures = {
        "events": args.count,
        "rate_per_s": args.rate,
        "stream_latency": stream,
        "stream_missing": lost,
        "static_files": len(assets),
        "static_kib": round(sum(assets.values()) / 1024, 1),
    }
    ratios = {k: round(baseline[k] / stream[k], 3) for k in ("p50_ms", "p99_ms") if stream[k]}
    write_result(
        "dashboard_stream",
        "Dashboard live feed: node publish to Server-Sent Event",
        figures,
        {"mqtt_subscriber_latency": baseline},
        ratios,
        "Stream latency includes the hub's ingest batching (batch_ms 50), the SQLite commit and the "
        "SSE fan-out; the baseline is a bare MQTT subscriber on the same broker. Ratios: baseline / "
        "stream.",
    )
    print(json.dumps({"figures": figures, "baseline": baseline, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
