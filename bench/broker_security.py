"""What the production broker's security costs: auth + ACL, and TLS, beside an open broker.

* **baseline**: the test harness's Mosquitto (anonymous, no ACL) with the shipped queue and
  in-flight limits, plain TCP.
* **shipped**: ``deploy/mosquitto`` as shipped (logins from make-users, the ACL's ``%u``
  patterns), on its plain listener and on its TLS listener (a CA from make-certs).

For each: a node login publishes QoS 1 events (about 400 bytes) on its own events topic as
fast as the client's in-flight window allows, and a hub login receives them. Figures: the
broker process's CPU time per event (kernel-counted, so the machine's other load does not
inflate it), events per second from the first publish to the last arrival (median of
interleaved rounds), and the time from starting a client to its CONNACK (TCP, TLS
handshake, password check). Same broker binary, same run.

Writes ``bench/results/broker_security.json``; ratios: 1.0 = the security is free, below 1 = its cost.

    python bench/broker_security.py [--events 10000] [--rounds 3] [--connects 30]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from deploy_site import HUB, ShippedSite  # noqa: E402

from bench.common import write_result  # noqa: E402
from devsite.broker import LocalMosquitto  # noqa: E402
from shared.config import BrokerConfig  # noqa: E402
from shared.messages import Event, utc_now  # noqa: E402
from shared.mqtt import MqttClient, Received  # noqa: E402
from shared.topics import NodeTopics  # noqa: E402

NODE = NodeTopics("hq", "door-1")


def event(n: int) -> bytes:
    return Event(
        type="new",
        id=f"hq-door-1-{n:06d}",
        site="hq",
        node="door-1",
        ts=utc_now(),
        label="no_mask",
        score=0.93,
        box=(120, 80, 96, 96),
        angle=15.0,
    ).to_json()


def broker_process(config_path: Path) -> psutil.Process:
    """The Mosquitto process started with ``config_path``."""
    for proc in psutil.process_iter(["cmdline"]):
        if str(config_path) in (proc.info["cmdline"] or []):
            return proc
    raise RuntimeError(f"no mosquitto running with {config_path}")


def cpu_s(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def throughput(
    node_cfg: BrokerConfig, hub_cfg: BrokerConfig, count: int, broker: psutil.Process
) -> tuple[float, float]:
    """Events per second from a node login to a hub login (QoS 1 both ways), and the broker's
    CPU milliseconds per 1000 events (counted by the kernel, so other load on the machine
    does not inflate it)."""
    payloads = [event(n) for n in range(count)]
    done = threading.Event()
    got = 0

    def receive(_: Received) -> None:
        nonlocal got
        got += 1
        if got == count:
            done.set()

    hub = MqttClient(hub_cfg, "bench-hub")
    hub.subscribe(NODE.events, receive, qos=1)
    node = MqttClient(node_cfg, "bench-node")
    hub.start()
    node.start()
    try:
        assert hub.wait_connected(10) and node.wait_connected(10), "could not connect"
        time.sleep(0.3)  # let the subscription settle
        started, cpu_before = time.perf_counter(), cpu_s(broker)
        for payload in payloads:
            node.publish(NODE.events, payload, qos=1)
        assert done.wait(120), f"only {got} of {count} events arrived"
        elapsed, cpu = time.perf_counter() - started, cpu_s(broker) - cpu_before
        return count / elapsed, cpu * 1000 / count * 1000
    finally:
        node.stop()
        hub.stop()


def connect_ms(cfg: BrokerConfig, count: int) -> float:
    """Median milliseconds from starting a client to its CONNACK."""
    samples = []
    for i in range(count):
        client = MqttClient(cfg, f"bench-connect-{i}")
        started = time.perf_counter()
        client.start()
        assert client.wait_connected(10), client.last_error
        samples.append((time.perf_counter() - started) * 1000)
        client.stop()
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10000, help="events per configuration and round (default 10000)")
    parser.add_argument("--connects", type=int, default=30, help="connects per configuration (default 30)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # the same limits and TCP settings as the shipped config: only the security differs
    shipped = (HERE.parent / "deploy" / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    same = ("max_queued_messages", "max_inflight_messages", "max_packet_size", "set_tcp_nodelay")
    limits = [line for line in shipped if line.startswith(same)]
    open_broker = LocalMosquitto(extra_config="\n".join(limits)).start()
    site = ShippedSite(("hq/door-1",)).start()
    try:
        plain = BrokerConfig(host=open_broker.host, port=open_broker.port)
        open_proc, site_proc = broker_process(open_broker.config_path), broker_process(site.broker.config_path)
        setups = {
            "open": (plain, plain, open_proc),
            "auth_acl": (site.login("hq/door-1"), site.login(HUB), site_proc),
            "auth_acl_tls": (site.login("hq/door-1", tls=True), site.login(HUB, tls=True), site_proc),
        }
        # interleaved rounds, medians: the machine's other load hits every configuration alike
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
        for _round in range(args.rounds):
            for name, (node, hub, proc) in setups.items():
                samples[name].append(throughput(node, hub, args.events, proc))
        rates = {name: round(statistics.median(r for r, _ in values), 1) for name, values in samples.items()}
        cpu = {name: round(statistics.median(c for _, c in values), 1) for name, values in samples.items()}
        connects = {name: round(connect_ms(node, args.connects), 2) for name, (node, _hub, _p) in setups.items()}
    finally:
        site.close()
        open_broker.close()
    figures = {
        "auth_acl_broker_cpu_ms_per_1000_events": cpu["auth_acl"],
        "auth_acl_tls_broker_cpu_ms_per_1000_events": cpu["auth_acl_tls"],
        "auth_acl_events_per_s": rates["auth_acl"],
        "auth_acl_tls_events_per_s": rates["auth_acl_tls"],
        "auth_acl_connect_ms_p50": connects["auth_acl"],
        "auth_acl_tls_connect_ms_p50": connects["auth_acl_tls"],
        "events": args.events,
        "rounds": args.rounds,
        "connects": args.connects,
    }
    baseline = {
        "open_broker_cpu_ms_per_1000_events": cpu["open"],
        "open_events_per_s": rates["open"],
        "open_connect_ms_p50": connects["open"],
    }
    # as the report reads them: 1.0 = the security is free, below 1 = what it costs
    ratios = {
        "auth_acl_broker_cpu": round(cpu["open"] / cpu["auth_acl"], 2),
        "auth_acl_tls_broker_cpu": round(cpu["open"] / cpu["auth_acl_tls"], 2),
        "auth_acl_throughput": round(rates["auth_acl"] / rates["open"], 3),
        "auth_acl_tls_throughput": round(rates["auth_acl_tls"] / rates["open"], 3),
        "auth_acl_connect_time": round(connects["open"] / connects["auth_acl"], 3),
        "auth_acl_tls_connect_time": round(connects["open"] / connects["auth_acl_tls"], 3),
    }
    write_result(
        "broker_security",
        "Broker security: auth + ACL and TLS vs an open broker",
        figures,
        baseline,
        ratios,
        "QoS 1 events node login -> hub login through one Mosquitto 2.0 binary. Broker CPU per "
        "event (kernel-counted) is the robust figure; events/s and connect times are wall-clock and move "
        "with the machine's load. Ratios are open / shipped for CPU and connect time, shipped / open for "
        "throughput: 1.0 means the security is free, below 1 is its cost (ACL checks, password hashing, "
        "TLS).",
    )
    print(f"broker CPU ms/1000 events: {cpu}; events/s: {rates}; connect ms p50: {connects}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
