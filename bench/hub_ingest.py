"""Durable ingest rate of the hub through a real Mosquitto, side by side with its baselines.

Three consumers of the same stream of QoS 1 events, each in the same run, on the same private broker:

* **durable**: the hub's ingest as the hub runs it (persistent MQTT 5 session, manual acks after commit,
  batches of ``batch_size`` / ``batch_ms`` validated and written by the writer process, SQLite WAL with
  ``synchronous=FULL``), with acks on: the events carry ``seq``/``outbox_id`` as nodes send them and the hub
  publishes an ack per node outbox after each commit (:mod:`hub.ingest.acks`; its bytes per event are reported);
* **(a) pass-through**: a bare QoS 1 subscriber that only counts messages (the broker's own rate);
* **(b) naive**: the same ingest code committing one transaction per message (``batch_size=1``).

Then the event-to-commit latency (event ``ts`` set at publish time -> commit) while publishing at a
steady 1,000 events/s (and 200/s), next to the publish-to-receive latency of the bare subscriber.
Writes ``bench/results/hub_ingest.json``.

    python bench/hub_ingest.py [--events 20000] [--naive-events 2000] [--seconds 10] [--latency-rates 1000,200]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "tests")]

from fault_support import tree_cpu_s  # noqa: E402

from bench.report import machine  # noqa: E402
from devsite.broker import LocalMosquitto  # noqa: E402
from hub.config import HubConfig  # noqa: E402
from hub.ingest.acks import AckPublisher  # noqa: E402
from hub.ingest.batch_core import BatchResult, WriterSettings  # noqa: E402
from hub.ingest.consumer import Ingest  # noqa: E402
from hub.ingest.writer_process import WriterProcess  # noqa: E402
from hub.services.alerts import Alerter  # noqa: E402
from hub.storage.database import Store  # noqa: E402
from hub.storage.events import EventLog  # noqa: E402
from shared.config import BrokerConfig  # noqa: E402
from shared.messages import Event, utc_now  # noqa: E402
from shared.mqtt import MqttClient, Received  # noqa: E402
from shared.topics import NodeTopics, node_filter  # noqa: E402

log = logging.getLogger("bench.hub_ingest")
SITE = "bench"
#: Simulated nodes the events come from, round robin.
NODES = 5


def event_payload(node: str, n: int, tag: str) -> bytes:
    """Event ``n`` (round robin over the nodes) of ``node``, numbered as its outbox would (``seq``, ``outbox_id``)."""
    return Event(
        type="new",
        id=f"{tag}-{node}-{n:07d}",
        site=SITE,
        node=node,
        ts=utc_now(),
        label="no_mask" if n % 10 == 0 else "mask",
        score=0.9,
        box=(10, 20, 64, 64),
        angle=0.0,
        seq=n // NODES + 1,
        outbox_id=f"{int(node[1:]):016x}",
    ).to_json()


def _publisher(broker: BrokerConfig, count: int, tag: str, rate: float | None, out: mp.Queue[float]) -> None:
    """Child process: publish ``count`` events QoS 1 (paced at ``rate``/s, stamped at publish time)."""
    nodes = [f"n{i}" for i in range(NODES)]
    client = MqttClient(broker, f"bench-pub-{uuid.uuid4().hex[:6]}")
    client.start()
    assert client.wait_connected(10)
    prepared = [] if rate else [event_payload(nodes[n % NODES], n, tag) for n in range(count)]
    started = time.perf_counter()
    infos = []
    for n in range(count):
        node = nodes[n % NODES]
        if rate:
            lag = started + n / rate - time.perf_counter()
            if lag > 0:
                time.sleep(lag)
        payload = event_payload(node, n, tag) if rate else prepared[n]
        infos.append(client.publish(NodeTopics(SITE, node).events, payload, qos=1))
    for info in infos:
        info.wait_for_publish(60)
    out.put(count / (time.perf_counter() - started))
    client.stop()


def publish_all(broker: BrokerConfig, count: int, tag: str, rate: float | None = None) -> tuple[float, float]:
    """Publish from a separate process (like a real node); return (start time, publishing rate achieved)."""
    out: mp.Queue[float] = mp.Queue()
    proc = mp.Process(target=_publisher, args=(broker, count, tag, rate, out), daemon=True)
    started = time.perf_counter()
    proc.start()
    pub_rate = out.get(timeout=600)
    proc.join(30)
    return started, pub_rate


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[int(0.99 * (len(ordered) - 1))],
        "max_ms": 1000 * ordered[-1],
    }


def run_passthrough(broker: BrokerConfig, count: int, tag: str, rate: float | None = None) -> dict[str, float]:
    """(a) a bare QoS 1 subscriber: rate from first to last message received; latency publish -> receive."""
    done = threading.Event()
    times: list[float] = []
    latencies: list[float] = []

    def on_message(message: Received) -> None:
        times.append(time.perf_counter())
        if rate:
            sent = datetime.fromisoformat(json.loads(message.payload)["ts"].replace("Z", "+00:00"))
            latencies.append(time.time() - sent.timestamp())
        if len(times) >= count:
            done.set()

    sub = MqttClient(broker, f"bench-bare-{tag}")
    sub.subscribe(node_filter("events", SITE), on_message, qos=1)
    sub.start()
    assert sub.wait_connected(10)
    time.sleep(0.3)
    cpu = time.process_time()
    _started, pub_rate = publish_all(broker, count, tag, rate)
    assert done.wait(120), f"bare subscriber got {len(times)} of {count}"
    cpu = time.process_time() - cpu
    sub.stop()
    out = {
        "events_per_s": (count - 1) / (times[-1] - times[0]),
        "publisher_events_per_s": pub_rate,
        "cpu_us_per_event": 1e6 * cpu / count,
    }
    return {**out, **percentiles(latencies)} if rate else out


def make_ingest(
    broker: BrokerConfig, workdir: Path, name: str, batch_size: int, batch_ms: int, on_commit: object
) -> tuple[Ingest, MqttClient, Store, WriterProcess]:
    config = HubConfig.model_validate(
        {
            "broker": broker.model_dump(),
            "db_url": f"sqlite:///{workdir / f'{name}.db'}",
            "sites": [SITE],
            "snapshot_dir": str(workdir / "snaps"),
            "ingest": {"batch_size": batch_size, "batch_ms": batch_ms, "share_group": f"g{name}"},
        }
    )
    store = Store(config.db_url)
    store.migrate()
    writer = WriterProcess(WriterSettings.from_config(config, "http://bench"))
    writer.start()
    client = MqttClient(broker, f"bench-hub-{name}", persistent=True, manual_ack=True)
    acks = AckPublisher("bench", lambda topic, payload: client.publish(topic, payload, qos=1))
    ingest = Ingest(
        config,
        client,
        writer,
        EventLog(store, config.snapshot_dir),
        Alerter(None, cooldown_s=60, public_url="http://bench"),
        on_commit=on_commit,  # type: ignore[arg-type]
        acks=acks,
    )
    ingest.start()
    client.start()
    assert client.wait_connected(10)
    time.sleep(0.3)
    return ingest, client, store, writer


def run_consumer(
    broker: BrokerConfig,
    workdir: Path,
    name: str,
    count: int,
    batch_size: int,
    batch_ms: int,
    rate: float | None = None,
) -> dict[str, float]:
    """Ingest ``count`` events; rate from the first to the last commit; latency event ts -> commit."""
    commits: list[tuple[float, int]] = []  # (time, events committed so far)
    latencies: list[float] = []
    done = threading.Event()

    def on_commit(result: BatchResult) -> None:
        total = (commits[-1][1] if commits else 0) + result.events
        commits.append((time.perf_counter(), total))
        if rate:
            latencies.extend(result.committed_at - ts for ts in result.event_ts)
        if total >= count:
            done.set()

    ingest, client, store, writer = make_ingest(broker, workdir, name, batch_size, batch_ms, on_commit)
    cpu = time.process_time()
    assert writer.pid is not None
    cpu_writer = tree_cpu_s(writer.pid)
    _started, pub_rate = publish_all(broker, count, name, rate)
    assert done.wait(600), f"{name}: committed {commits[-1][1] if commits else 0} of {count}"
    cpu = time.process_time() - cpu
    cpu_writer = tree_cpu_s(writer.pid) - cpu_writer
    (first_at, first_total), (last_at, last_total) = commits[0], commits[-1]
    events_per_s = (last_total - first_total) / (last_at - first_at)  # steady state: after the first commit
    ingest.stop()
    writer.stop()
    client.stop()
    store.close()
    assert ingest.acks is not None
    out = {
        "events_per_s": events_per_s,
        "publisher_events_per_s": pub_rate,
        "batches": ingest.stats.batches,
        "ack_bytes_per_event": ingest.acks.bytes / count,
        "acks_per_batch": ingest.acks.acks / ingest.stats.batches,
        "cpu_us_per_event": 1e6 * (cpu + cpu_writer) / count,
        "writer_cpu_us_per_event": 1e6 * cpu_writer / count,
    }
    return {**out, **percentiles(latencies)} if rate else out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="events for the durable and pass-through runs")
    parser.add_argument("--naive-events", type=int, default=2_000, help="events for the naive run (slow)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each latency run")
    parser.add_argument(
        "--latency-rates",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1000, 200],
        metavar="R,R",
        help="steady publishing rates of the latency runs (default 1000,200)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="interleaved pass-through/durable rounds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with LocalMosquitto() as mosquitto, tempfile.TemporaryDirectory(prefix="bench-hub-") as tmp:
        broker = BrokerConfig(host=mosquitto.host, port=mosquitto.port, reconnect_min_s=0.2, reconnect_max_s=2)
        workdir = Path(tmp)
        bare, durable, bare_cpu, durable_cpu, ack_bytes = [], [], [], [], []
        for r in range(args.rounds):  # interleaved, so load changes on the shared machine hit both alike
            a = run_passthrough(broker, args.events, f"a{r}")
            d = run_consumer(broker, workdir, f"durable{r}", args.events, 500, 50)
            bare.append(a["events_per_s"])
            durable.append(d["events_per_s"])
            bare_cpu.append(a["cpu_us_per_event"])
            durable_cpu.append(d["cpu_us_per_event"])
            ack_bytes.append(d["ack_bytes_per_event"])
            print(
                f"round {r + 1}: pass-through {bare[-1]:.0f}/s ({bare_cpu[-1]:.0f} us CPU/event), "
                f"durable {durable[-1]:.0f}/s ({durable_cpu[-1]:.0f} us CPU/event)",
                flush=True,
            )
        naive_run = run_consumer(broker, workdir, "naive", args.naive_events, 1, 1)
        naive = naive_run["events_per_s"]
        print(
            f"naive one commit per message: {naive:.0f}/s ({naive_run['cpu_us_per_event']:.0f} us CPU/event)",
            flush=True,
        )
        lat_bare: dict[int, dict[str, float]] = {}
        lat_durable: dict[int, dict[str, float]] = {}
        for rate in args.latency_rates:
            count = int(rate * args.seconds)
            lat_bare[rate] = run_passthrough(broker, count, f"lat-a{rate}", rate=float(rate))
            lat_durable[rate] = run_consumer(broker, workdir, f"latency{rate}", count, 500, 50, rate=float(rate))
            print(
                f"at {rate}/s: pass-through p50 {lat_bare[rate]['p50_ms']:.1f} ms "
                f"p99 {lat_bare[rate]['p99_ms']:.1f} ms; durable p50 {lat_durable[rate]['p50_ms']:.1f} ms "
                f"p99 {lat_durable[rate]['p99_ms']:.1f} ms",
                flush=True,
            )
    paired = [d / b for d, b in zip(durable, bare, strict=True)]
    result = {
        "name": "hub_ingest",
        "title": "Hub: durable ingest rate and event-to-commit latency",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "figures": {
            "durable_events_per_s_median": round(statistics.median(durable), 1),
            "durable_events_per_s_rounds": [round(x, 1) for x in durable],
            **{
                f"latency_at_{r}_per_s_{k}": round(v[k], 2)
                for r, v in lat_durable.items()
                for k in ("p50_ms", "p99_ms", "max_ms")
            },
            **{
                f"latency_run_{r}_per_s_publisher_rate": round(v["publisher_events_per_s"], 1)
                for r, v in lat_durable.items()
            },
            "durable_cpu_us_per_event_median": round(statistics.median(durable_cpu), 1),
            "ack_bytes_per_event_median": round(statistics.median(ack_bytes), 2),
            "events_per_round": args.events,
        },
        "baseline": {
            "passthrough_bare_qos1_events_per_s_median": round(statistics.median(bare), 1),
            "passthrough_rounds": [round(x, 1) for x in bare],
            "naive_commit_per_message_events_per_s": round(naive, 1),
            "naive_events": args.naive_events,
            "naive_cpu_us_per_event": round(naive_run["cpu_us_per_event"], 1),
            "passthrough_cpu_us_per_event_median": round(statistics.median(bare_cpu), 1),
            **{
                f"passthrough_latency_at_{r}_per_s_{k}": round(v[k], 2)
                for r, v in lat_bare.items()
                for k in ("p50_ms", "p99_ms")
            },
        },
        "ratios": {
            "durable_vs_passthrough": round(statistics.median(durable) / statistics.median(bare), 3),
            "durable_vs_passthrough_paired_median": round(statistics.median(paired), 3),
            "durable_vs_naive": round(statistics.median(durable) / naive, 2),
            "passthrough_cpu_share_of_durable": round(statistics.median(bare_cpu) / statistics.median(durable_cpu), 3),
        },
        "notes": "Targets: durable (acks to the nodes on) >= 0.8 x pass-through, >= 10 x naive. Ack bytes per event: "
        "payload bytes of the hub's acks (5 simulated nodes, one outbox each) over events. "
        "Publishers run in a separate process; "
        "rates are steady-state (first to last message received or committed); rounds are interleaved "
        "on a 2-core machine shared with other work. SQLite WAL, synchronous=FULL; batch 500 / 50 ms. "
        "Latency = commit time - event ts stamped when published (same clock). CPU per event of the durable "
        "hub = hub process + writer process.",
    }
    out = HERE / "results" / "hub_ingest.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"]), f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
