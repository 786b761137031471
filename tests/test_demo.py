"""`maskwatch demo`: starts a whole site, produces events within 30 s, stops cleanly on SIGINT, leaves no process."""

from __future__ import annotations

import json
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

EVENTS_WITHIN_S = 30.0
URL_LINE = re.compile(r"Dashboard: (http://\S+)")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _wait_url(process: subprocess.Popen[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                break
            continue
        lines.append(line)
        match = URL_LINE.search(line)
        if match:
            return match.group(1)
    pytest.fail(f"no dashboard URL printed; output: {''.join(lines)!r}, exit {process.poll()}")


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_demo_starts_produces_events_and_stops_cleanly(broker: str, tmp_path: Path) -> None:
    nodes = 2 if broker == "mosquitto" else 1
    command = [sys.executable, "-m", "shared.cli", "demo", "--nodes", str(nodes), "--http", "127.0.0.1:0",
               "--state-dir", str(tmp_path)]
    if broker == "embedded":
        command.append("--embedded-broker")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = _wait_url(process, 60)
        started = time.monotonic()
        children = psutil.Process(process.pid).children(recursive=True)
        node_commands = [" ".join(c.cmdline()) for c in children if "edge" in c.cmdline()]
        assert len(node_commands) == nodes and all("--source scene:builtin" in c for c in node_commands)
        total = 0
        while time.monotonic() - started < EVENTS_WITHIN_S and total == 0:
            time.sleep(1.0)
            total = _get(f"{url}api/events?limit=1")["total"]
        assert total > 0, f"no event within {EVENTS_WITHIN_S} s"
        listed = _get(f"{url}api/nodes")
        assert sorted(n["node"] for n in listed) == [f"demo-{i}" for i in range(1, nodes + 1)]
        assert all(n["status"] == "online" for n in listed)
        with urllib.request.urlopen(url, timeout=5) as response:
            assert b"Maskwatch" in response.read()  # the dashboard is served
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
        alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
        assert alive == [], f"left behind: {alive}"
        assert (tmp_path / "maskwatch.db").is_file()
        logs = {p.name: p.read_text() for p in (tmp_path / "logs").glob("*.log")}
        assert len(logs) == nodes and all("Traceback" not in text for text in logs.values()), logs
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
