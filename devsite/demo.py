"""``maskwatch demo``: a whole site on one machine, with one command.

It starts, in order: a broker (a private Mosquitto on a free port when the
binary is installed, else the embedded amqtt broker, which speaks MQTT 3.1.1
only, so everything then runs over 3.1.1), the hub with a SQLite file and the
dashboard, and N simulated edge nodes as subprocesses
(``maskwatch edge --source scene:builtin``: the built-in panoramic scene, the
servo sweeping for faces). It prints the dashboard URL and runs until
SIGINT/SIGTERM, then stops the nodes (they publish ``offline``), the hub and the
broker, in that order, and leaves no process behind.

The hub never imports the edge package: nodes are separate processes.

Example::

    maskwatch demo --nodes 3 --http 127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Protocol

from devsite.broker import LocalMosquitto, free_port, mosquitto_binary
from devsite.embedded_broker import EmbeddedBroker
from hub.config import HomeAssistantConfig, HttpConfig, HubConfig
from shared.config import BrokerConfig, MqttProtocol, parse_host_port
from shared.errors import ConfigError, MaskwatchError, MissingExtraError
from shared.shutdown import ShutdownSignals
from shared.topics import validate_id

log = logging.getLogger(__name__)

DEFAULT_HTTP = "127.0.0.1:8080"
NODE_STOP_S = 15.0
#: Sweep ranges given to the nodes in turn, so that some find the built-in scene's unmasked face (at -60
#: degrees) and others its masked one (at +60) first.
SWEEPS = ((-90.0, 0.0), (0.0, 90.0), (-90.0, 90.0))


class Broker(Protocol):
    """What the demo needs of a broker it started."""

    host: str
    port: int

    def stop(self) -> None: ...


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``maskwatch demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="run a whole demo site here: broker, hub, simulated nodes, dashboard",
        description="Start a complete Maskwatch site on this machine: an MQTT broker (Mosquitto when installed, "
        "else an embedded MQTT 3.1.1 broker), the hub with a SQLite database, N simulated nodes on the "
        "built-in panoramic scene, and the web dashboard. Prints the dashboard URL; Ctrl-C stops "
        "everything.",
        epilog="Examples:\n  maskwatch demo\n  maskwatch demo --nodes 5 --http 0.0.0.0:8080\n"
        "  maskwatch demo --broker 10.0.0.5:1883 --homeassistant   # use an existing broker",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--nodes", type=int, default=3, metavar="N", help="simulated nodes (1..20, default 3)")
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        default=DEFAULT_HTTP,
        help=f"dashboard and API address (default {DEFAULT_HTTP}; port 0 picks a free one)",
    )
    parser.add_argument("--broker", metavar="HOST:PORT", help="use this running broker instead of starting one")
    parser.add_argument(
        "--protocol",
        type=int,
        choices=(5, 311),
        help="MQTT version with --broker (default 5); a started broker sets its own",
    )
    parser.add_argument(
        "--embedded-broker",
        action="store_true",
        help="start the embedded MQTT 3.1.1 broker even when Mosquitto is installed",
    )
    parser.add_argument("--site", default="demo", help="site id (default demo)")
    parser.add_argument("--homeassistant", action="store_true", help="publish Home Assistant MQTT discovery")
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="keep the database, snapshots and node logs here (default: a temporary folder, removed on exit)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo site until SIGINT/SIGTERM."""
    if not 1 <= args.nodes <= 20:
        raise ConfigError(f"--nodes {args.nodes}: give 1 to 20")
    validate_id(args.site, "site")
    host, _, port = args.http.rpartition(":")
    http_host, http_port = (host, 0) if port == "0" and host else parse_host_port(args.http, default_port=8080)
    if importlib.util.find_spec("cv2") is None:  # the nodes are 'maskwatch edge' processes
        raise MissingExtraError("edge", "cv2")
    external = parse_host_port(args.broker, default_port=1883) if args.broker else None
    site = DemoSite(
        nodes=args.nodes,
        site=args.site,
        http=(http_host, http_port),
        broker=external,
        protocol=args.protocol,
        embedded=args.embedded_broker,
        homeassistant=args.homeassistant,
        state_dir=Path(args.state_dir) if args.state_dir else None,
    )
    stop = threading.Event()
    with ShutdownSignals(stop):
        try:
            site.start()
            print(
                f"Maskwatch demo site '{args.site}': {args.nodes} nodes, broker {site.broker_address} "
                f"(MQTT {'5' if site.protocol == 5 else '3.1.1'}), data in {site.state_dir}",
                flush=True,
            )
            print(f"Dashboard: {site.url}   (Ctrl-C stops everything)", flush=True)
            while not stop.wait(1.0):
                site.check_nodes()
        finally:
            site.stop()
    return 0


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Linux: the node gets SIGTERM if the demo process dies without cleaning up."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class DemoSite:
    """Broker + hub + dashboard + N node subprocesses, started and stopped as one.

    :param nodes: how many simulated nodes (``<site>-1`` ... ``<site>-N``).
    :param site: the site id.
    :param http: where the hub serves the API and dashboard (port 0: a free port).
    :param broker: ``(host, port)`` of a running broker to use, or ``None`` to start one.
    :param protocol: MQTT version with an external broker (default 5).
    :param embedded: start the embedded amqtt broker even if Mosquitto is installed.
    :param homeassistant: publish Home Assistant discovery from the hub.
    :param state_dir: where the database, snapshots, outboxes and node logs go (default: temporary).
    """

    def __init__(
        self,
        *,
        nodes: int = 3,
        site: str = "demo",
        http: tuple[str, int] = ("127.0.0.1", 8080),
        broker: tuple[str, int] | None = None,
        protocol: MqttProtocol | None = None,
        embedded: bool = False,
        homeassistant: bool = False,
        state_dir: Path | None = None,
    ) -> None:
        self.nodes = nodes
        self.site = site
        self.http = http
        self.external = broker
        self.protocol: MqttProtocol = protocol or 5
        self.embedded = embedded
        self.homeassistant = homeassistant
        self._tmp: str | None = None
        if state_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="maskwatch-demo-")
            state_dir = Path(self._tmp)
        self.state_dir = Path(state_dir)
        self.broker: Broker | None = None
        self.broker_address = ""
        self.hub: Any = None
        self.url = ""
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._reported: set[str] = set()

    def start(self) -> None:
        """Start broker, hub and nodes; on any failure, stop what was started and re-raise."""
        try:
            self._start_broker()
            self._start_hub()
            for index in range(1, self.nodes + 1):
                self._start_node(f"{self.site}-{index}", SWEEPS[(index - 1) % len(SWEEPS)])
        except BaseException:
            self.stop()
            raise

    def _start_broker(self) -> None:
        if self.external:
            host, port = self.external
        elif mosquitto_binary() and not self.embedded:
            mosquitto = LocalMosquitto(workdir=self.state_dir / "mosquitto").start()
            self.broker, host, port = mosquitto, mosquitto.host, mosquitto.port
        else:
            embedded = EmbeddedBroker().start()
            self.broker, host, port, self.protocol = embedded, embedded.host, embedded.port, embedded.protocol
        self.broker_address = f"{host}:{port}"

    def _start_hub(self) -> None:
        from hub.app import HubApp  # the hub extra: imported when the demo runs, not for `maskwatch --help`

        host, port = self.http
        port = port or free_port(host if host not in ("0.0.0.0", "::") else "127.0.0.1")
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        self.url = f"http://{shown}:{port}/"
        broker_host, broker_port = self.broker_address.rsplit(":", 1)
        config = HubConfig(
            broker=BrokerConfig(
                host=broker_host,
                port=int(broker_port),
                protocol=self.protocol,
                reconnect_min_s=0.5,
                reconnect_max_s=5.0,
            ),
            db_url=f"sqlite:///{self.state_dir / 'maskwatch.db'}",
            hub_id="demo",
            sites=[self.site],
            snapshot_dir=self.state_dir / "snapshots",
            command_timeout_s=5.0,
            http=HttpConfig(host=host, port=port, public_url=self.url.rstrip("/")),
            homeassistant=HomeAssistantConfig(enabled=self.homeassistant),
        )
        self.hub = HubApp(config)
        try:
            self.hub.start()
        except MaskwatchError as exc:
            raise MaskwatchError(f"{exc} (is the port taken? --http {host}:0 picks a free one)") from exc

    def _start_node(self, node: str, sweep: tuple[float, float]) -> None:
        logs = self.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "shared.cli",
            "edge",
            "--source",
            "scene:builtin",
            "--site",
            self.site,
            "--node",
            node,
            "--broker",
            self.broker_address,
            "--outbox",
            str(self.state_dir / "outbox" / f"{node}.sqlite"),
            "--set",
            f"servo.sweep_min_deg={sweep[0]:g}",
            "--set",
            f"servo.sweep_max_deg={sweep[1]:g}",
        ]
        env = {**os.environ, "MASKWATCH_BROKER__PROTOCOL": str(self.protocol)}
        with open(logs / f"{node}.log", "ab") as log_file:
            self.processes[node] = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        log.info("node %s started (pid %d), log %s", node, self.processes[node].pid, logs / f"{node}.log")

    def check_nodes(self) -> None:
        """Log (once) every node process that ended on its own."""
        for node, process in self.processes.items():
            code = process.poll()
            if code is not None and node not in self._reported:
                self._reported.add(node)
                log.error("node %s exited with code %s; see %s", node, code, self.state_dir / "logs" / f"{node}.log")

    def stop(self) -> None:
        """Stop nodes, hub and broker in that order; remove the temporary folder (idempotent)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for node, process in self.processes.items():
            try:
                process.wait(NODE_STOP_S)
            except subprocess.TimeoutExpired:
                log.warning("node %s did not stop in %.0f s: killing it", node, NODE_STOP_S)
                process.kill()
                process.wait()
        self.processes.clear()
        if self.hub is not None:
            self.hub.stop()
            self.hub = None
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
