"""Command round trip (hub-side client -> node -> answer) over a real Mosquitto, beside a bare MQTT echo.

* **node**: a running edge node (simulated camera at 15 fps, inference on) answers ``threshold``
  commands sent one after another by a hub-side client; time from publish to the answer's arrival.
* **node, inference paused**: the same with ``detect`` off (what the dispatch itself costs).
* **baseline**: the same client and broker with a bare echo client that republishes each command
  payload on a reply topic straight from its network thread (the transport's floor).

Writes ``bench/results/edge_commands.json``; ratios are baseline / node (1.0 = no overhead).

    python bench/edge_commands.py [--count 300]
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.common import write_result  # noqa: E402
from devsite.broker import LocalMosquitto  # noqa: E402
from edge.app import EdgeApp  # noqa: E402
from edge.config import load_edge_config  # noqa: E402
from shared.config import BrokerConfig  # noqa: E402
from shared.mqtt import MqttClient, Received  # noqa: E402
from shared.topics import NodeTopics  # noqa: E402


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)  # noqa: E731
    return {"p50_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99), "max_ms": round(ordered[-1], 2)}


def round_trips(client: MqttClient, inbox: queue.Queue[Received], topic: str, count: int) -> list[float]:
    samples = []
    for i in range(count):
        payload = json.dumps({"request_id": f"r{i}", "value": 0.5}).encode()
        started = time.perf_counter()
        client.publish(topic, payload, qos=1)
        while True:
            message = inbox.get(timeout=10)
            if f'"r{i}"' in message.payload.decode(errors="replace"):
                break
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # without TCP_NODELAY, Nagle + delayed ACKs add ~40 ms per hop on loopback and hide the node's own cost
    broker = LocalMosquitto(extra_config="set_tcp_nodelay true").start()
    cfg = BrokerConfig(host=broker.host, port=broker.port)
    figures: dict[str, Any] = {}
    baseline: dict[str, Any] = {}
    try:
        hub = MqttClient(cfg, f"bench-hub-{uuid.uuid4().hex[:6]}")
        inbox: queue.Queue[Received] = queue.Queue()
        hub.subscribe("bench-echo/reply", inbox.put)
        topics = NodeTopics("bench", "cmd")
        hub.subscribe(topics.response("threshold"), inbox.put)
        hub.start()
        assert hub.wait_connected(10)

        echo = MqttClient(cfg, f"bench-echo-{uuid.uuid4().hex[:6]}")
        echo.subscribe("bench-echo/request", lambda m: echo.publish("bench-echo/reply", m.payload, qos=1))
        echo.start()
        assert echo.wait_connected(10)
        time.sleep(0.3)
        base = round_trips(hub, inbox, "bench-echo/request", args.count)
        echo.stop()
        baseline.update(percentiles(base), count=len(base))

        with tempfile.TemporaryDirectory() as tmp:
            config = load_edge_config(
                None,
                {
                    "site": "bench",
                    "node": "cmd",
                    "source": "scene:builtin",
                    "pin_factory": "mock",
                    "broker": {"host": broker.host, "port": broker.port},
                    "outbox": {"path": f"{tmp}/o.sqlite"},
                    "delivery": "broker",
                    "scene": {"fps": 15},
                },
            )
            app = EdgeApp(config)
            app.start()
            assert app.client.wait_connected(10)
            time.sleep(1.0)
            app.stats()  # start a fresh stats interval
            node = round_trips(hub, inbox, topics.cmd("threshold"), args.count)
            figures.update(percentiles(node), count=len(node), node_fps_during=app.stats().fps)
            with app.runtime.lock:
                app.runtime.detect = False  # the same node with inference paused: the dispatch cost alone
            idle = round_trips(hub, inbox, topics.cmd("threshold"), args.count)
            figures["inference_paused"] = percentiles(idle)
            app.close()
        hub.stop()
    finally:
        broker.close()
    ratios = {
        "p50": round(baseline["p50_ms"] / figures["p50_ms"], 2),
        "p99": round(baseline["p99_ms"] / figures["p99_ms"], 2),
    }
    print(f"node round trip {figures}\nbare echo {baseline}\nratios (baseline/node) {ratios}")
    write_result(
        "edge_commands",
        "Edge command round trip (hub client -> node -> answer)",
        figures,
        baseline,
        ratios,
        "node: a running edge node with inference on answers threshold commands; baseline: a "
        "bare MQTT echo client on the same broker. ratio = baseline / node (1.0 = no overhead).",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
