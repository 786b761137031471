"""Scale: 100 simulated nodes x 10 events/s x 60 s into one ``maskwatch hub`` process, beside the bare broker.

Two runs on the same private Mosquitto, same load generator (``bench/loadgen.py``: nodes spread over a few
connections, QoS 1 ``new`` events with ``ts`` stamped at publish time):

* **hub**: a real ``maskwatch hub`` subprocess (SQLite, default batching). Sustained rate = events stored / time
  from the first to the last store; latency = ``received_at - first_seen`` of each stored row (publish ->
  stored in the batch that commits it); hub RSS sampled every second (peak = ``VmHWM``); hub CPU from /proc
  (hub = the hub process and its children: the writer process and multiprocessing's resource tracker).
* **baseline**: the broker's bare QoS 1 pass-through to a plain subscriber in its own process (receive - ts).

Writes ``bench/results/scale_hub.json``::

    python bench/scale_hub.py [--nodes 100] [--rate 10] [--seconds 60] [--connections 10]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]

from fault_support import HubProcess, tree_cpu_s, tree_rss_kb  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402

from bench.common import write_result  # noqa: E402
from bench.loadgen import LoadGen  # noqa: E402
from devsite.broker import LocalMosquitto  # noqa: E402
from hub.config import HubConfig  # noqa: E402
from shared.config import BrokerConfig  # noqa: E402
from shared.mqtt import MqttClient, Received  # noqa: E402
from shared.topics import node_filter  # noqa: E402
from tests.polling import wait_until  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1)))]


def latency_figures(latencies_s: list[float]) -> dict[str, float]:
    return {
        "latency_p50_ms": 1000 * statistics.median(latencies_s),
        "latency_p99_ms": 1000 * percentile(latencies_s, 0.99),
        "latency_max_ms": 1000 * max(latencies_s),
    }


def _bare_subscriber(broker: BrokerConfig, site: str, expected: Any, ready: Any, out: Any) -> None:
    """Child process: count events and their publish -> receive latency, until ``expected.value`` arrived."""
    times: list[float] = []
    latencies: list[float] = []

    def on_message(message: Received) -> None:
        now = time.time()
        ts = json.loads(message.payload)["ts"]
        times.append(now)
        latencies.append(now - datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp())

    client = MqttClient(broker, f"bench-bare-{site}")
    client.subscribe(node_filter("events", site), on_message, qos=1)
    client.start()
    client.wait_connected(10)
    time.sleep(0.5)
    ready.set()
    wait_until(lambda: expected.value and len(times) >= expected.value, 900)
    client.stop()
    out.put(
        {
            "received": len(times),
            "rate": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0,
            **latency_figures(latencies or [0.0]),
        }
    )


def run_baseline(broker: BrokerConfig, args: argparse.Namespace) -> dict[str, Any]:
    site = "bare"
    expected = mp.Value("i", 0)
    ready, out = mp.Event(), mp.Queue()
    proc = mp.Process(target=_bare_subscriber, args=(broker, site, expected, ready, out), daemon=True)
    proc.start()
    ready.wait(30)
    gen = LoadGen(broker, site, args.nodes, rate_per_node=args.rate, connections=args.connections).start()
    started = time.monotonic()
    sent = gen.run(args.seconds)
    offered = sent / (time.monotonic() - started)
    gen.wait_acked(60)
    expected.value = sent
    gen.stop()
    result = out.get(timeout=300)
    proc.join(10)
    return {"events_sent": sent, "offered_rate": offered, **result}


class Sampler:
    """Samples the RSS and CPU time of a process and its children every second in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss_kb: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.cpu_start = self.cpu_s()
        self.wall_start = time.monotonic()

    def cpu_s(self) -> float:
        return tree_cpu_s(self.pid)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.rss_kb.append(tree_rss_kb(self.pid))

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        cpu = self.cpu_s() - self.cpu_start
        wall = time.monotonic() - self.wall_start
        self._stop.set()
        self._thread.join()
        return {
            "hub_cpu_percent_of_one_core": 100 * cpu / wall,
            "hub_rss_mean_mb": statistics.mean(self.rss_kb) / 1024 if self.rss_kb else 0.0,
        }


def run_hub(broker: BrokerConfig, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    site = "scale"
    defaults = HubConfig().ingest  # the hub as shipped, not the test helper's small batches
    hub = HubProcess(
        broker, workdir, [site], settings={"ingest": {"batch_size": defaults.batch_size, "batch_ms": defaults.batch_ms}}
    ).start()
    try:
        sampler = Sampler(hub.pid).start()
        gen = LoadGen(broker, site, args.nodes, rate_per_node=args.rate, connections=args.connections).start()
        started = time.monotonic()
        sent = gen.run(args.seconds)
        offered = sent / (time.monotonic() - started)
        gen.wait_acked(60)
        engine = create_engine(hub.db_url)

        def stored() -> int:
            with engine.connect() as conn:
                return int(conn.execute(text("SELECT count(*) FROM events WHERE site = :s"), {"s": site}).scalar())

        wait_until(lambda: stored() >= sent, 120, every=0.5)
        usage = sampler.stop()
        peak_mb = hub.rss_kb("VmHWM") / 1024
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT first_seen, received_at, messages FROM events WHERE site = :s"), {"s": site}
            ).all()
        gen.stop()
        engine.dispose()
    finally:
        hub.stop()

    def seconds(value: Any) -> float:
        """A stored time (naive UTC, as a string or a datetime) in epoch seconds."""
        value = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return value.replace(tzinfo=UTC).timestamp()

    received = sorted(seconds(r[1]) for r in rows)
    latencies = [seconds(r[1]) - seconds(r[0]) for r in rows]
    return {
        "events_sent": sent,
        "offered_rate": offered,
        "events_stored": len(rows),
        "events_lost": sent - len(rows),
        "rows_with_extra_messages": sum(1 for r in rows if r[2] != 1),
        "rate": (len(received) - 1) / (received[-1] - received[0]) if len(received) > 1 else 0.0,
        **latency_figures(latencies or [0.0]),
        "hub_rss_peak_mb": peak_mb,
        **usage,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0, help="events per second per node")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--connections", type=int, default=10, help="MQTT connections the nodes share")
    args = parser.parse_args(argv)
    with LocalMosquitto() as mosquitto, tempfile.TemporaryDirectory(prefix="maskwatch-scale-") as tmp:
        broker = BrokerConfig(host=mosquitto.host, port=mosquitto.port)
        print(f"baseline: bare QoS 1 pass-through, {args.nodes} nodes x {args.rate}/s x {args.seconds} s")
        base = run_baseline(broker, args)
        print(f"hub: {args.nodes} nodes x {args.rate}/s x {args.seconds} s")
        hub = run_hub(broker, Path(tmp), args)
    figures = {
        "nodes": args.nodes,
        "events_per_s_per_node": args.rate,
        "seconds": args.seconds,
        "connections": args.connections,
        "offered_events_per_s": hub["offered_rate"],
        "events_sent": hub["events_sent"],
        "events_stored": hub["events_stored"],
        "events_lost": hub["events_lost"],
        "rows_counted_twice": hub["rows_with_extra_messages"],
        "sustained_events_per_s": hub["rate"],
        "event_to_store_p50_ms": hub["latency_p50_ms"],
        "event_to_store_p99_ms": hub["latency_p99_ms"],
        "event_to_store_max_ms": hub["latency_max_ms"],
        "hub_rss_peak_mb": hub["hub_rss_peak_mb"],
        "hub_rss_mean_mb": hub["hub_rss_mean_mb"],
        "hub_cpu_percent_of_one_core": hub["hub_cpu_percent_of_one_core"],
    }
    baseline = {
        "offered_events_per_s": base["offered_rate"],
        "events_sent": base["events_sent"],
        "events_received": base["received"],
        "passthrough_events_per_s": base["rate"],
        "publish_to_receive_p50_ms": base["latency_p50_ms"],
        "publish_to_receive_p99_ms": base["latency_p99_ms"],
    }
    ratios = {
        "sustained_rate_vs_passthrough": hub["rate"] / base["rate"] if base["rate"] else 0.0,
        "p50_latency_x_passthrough (lower is better)": hub["latency_p50_ms"] / base["latency_p50_ms"],
        "p99_latency_x_passthrough (lower is better)": hub["latency_p99_ms"] / base["latency_p99_ms"],
    }
    notes = (
        f"{args.nodes} simulated nodes on {args.connections} MQTT connections, {args.rate:g} QoS 1 events/s "
        f"each for {args.seconds:g} s, into one `maskwatch hub` process (SQLite WAL, default batching) on a "
        "private Mosquitto; the baseline is the same load through the same broker to a bare subscriber "
        "process. Latency: publish -> row stored (hub) vs publish -> message received (baseline). "
        "The load generator, the broker, the hub and the subscriber share this machine's cores."
    )
    write_result("scale_hub", "Scale: 100 nodes into one hub", figures, baseline, ratios, notes)
    print(json.dumps({"figures": figures, "baseline": baseline, "ratios": ratios}, indent=2))
    return 0 if hub["events_lost"] == 0 and hub["rows_with_extra_messages"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
