"""`maskwatch demo`: starts a whole site, produces events within 30 s, stops cleanly on SIGINT, leaves no process."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import pytest

from shared.config import BrokerConfig
from shared.mqtt import MqttClient, Received

EVENTS_WITHIN_S = 30.0
URL_LINE = re.compile(r"Dashboard: (http://\S+)")
BROKER_LINE = re.compile(r"broker (\S+) \(MQTT")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _wait_started(process: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """The broker address and the dashboard URL the demo prints once it is up."""
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        lines.append(line)
        match = URL_LINE.search(line)
        if match:
            broker = BROKER_LINE.search("".join(lines))
            assert broker, lines
            return broker.group(1), match.group(1)
    pytest.fail(f"no dashboard URL printed; output: {''.join(lines)!r}, exit {process.poll()}")


def _check_discovery(broker: str, nodes: int) -> None:
    """The hub's retained Home Assistant configs are on the (3.1.1) broker, one device per node."""
    host, port = broker.rsplit(":", 1)
    got: queue.Queue[Received] = queue.Queue()
    client = MqttClient(BrokerConfig(host=host, port=int(port), protocol=311), "test-demo-ha")
    client.subscribe("homeassistant/+/+/config", got.put)
    client.start()
    try:
        configs = {}
        deadline = time.monotonic() + 20
        while len(configs) < 7 * nodes and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                message = got.get(timeout=1)
                configs[message.topic] = json.loads(message.payload)
        assert len(configs) == 7 * nodes
        devices = {c["device"]["identifiers"][0] for c in configs.values()}
        assert devices == {f"maskwatch_demo_demo-{i}" for i in range(1, nodes + 1)}
    finally:
        client.stop()


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_starts_produces_events_and_stops_cleanly(broker: str, tmp_path: Path) -> None:
    nodes = 2 if broker == "mosquitto" else 1
    command = [
        sys.executable,
        "-m",
        "shared.cli",
        "demo",
        "--nodes",
        str(nodes),
        "--http",
        "127.0.0.1:0",
        "--state-dir",
        str(tmp_path),
    ]
    if broker == "embedded":  # MQTT 3.1.1 only; Home Assistant discovery on, checked below
        command += ["--embedded-broker", "--homeassistant"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        broker_address, url = _wait_started(process, 60)
        started = time.monotonic()
        children = psutil.Process(process.pid).children(recursive=True)
        node_commands = [" ".join(c.cmdline()) for c in children if "edge" in c.cmdline()]
        assert len(node_commands) == nodes and all("--source scene:builtin" in c for c in node_commands)
        total = 0
        while time.monotonic() - started < EVENTS_WITHIN_S and total == 0:
            time.sleep(1.0)
            total = _get(f"{url}api/events?limit=1")["total"]
        assert total > 0, f"no event within {EVENTS_WITHIN_S} s"
        expected = [f"demo-{i}" for i in range(1, nodes + 1)]
        online: list[str] = []
        while time.monotonic() - started < 60 and online != expected:  # a loaded machine starts nodes slowly
            online = sorted(n["node"] for n in _get(f"{url}api/nodes") if n["status"] == "online")
            time.sleep(0.5)
        assert online == expected
        with urllib.request.urlopen(url, timeout=5) as response:
            assert b"Maskwatch" in response.read()  # the dashboard is served
        if broker == "embedded":
            _check_discovery(broker_address, nodes)
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
        # the hub's writer and multiprocessing's resource tracker exit just after their parent: give them 10 s
        _, still_running = psutil.wait_procs(children, timeout=10)
        alive = [c for c in still_running if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], f"left behind: {alive}"
        assert (tmp_path / "maskwatch.db").is_file()
        logs = {p.name: p.read_text() for p in (tmp_path / "logs").glob("*.log")}
        assert len(logs) == nodes and all("Traceback" not in text for text in logs.values()), logs
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
