"""The composition root of the hub: builds the parts, starts them, stops them in reverse order.

Threads: paho's network threads (intake and control clients), ``hub-ingest``
(batches to the writer, acks), ``hub-housekeeping`` (offline alerts, retention),
``hub-http`` (uvicorn serving the API), and ``ha-discovery`` when Home Assistant
discovery is on. Process: ``maskwatch-hub-writer`` validates and stores the
batches (:mod:`hub.ingest.writer_process`; ``ingest.writer_process: false`` keeps it in the hub process).

Example::

    app = HubApp(load_config(HubConfig, "hub.yaml"))
    app.run()          # until SIGINT/SIGTERM: stop consuming, flush, close
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass

import uvicorn

from hub.api import HubServices, create_app
from hub.config import HubConfig
from hub.ingest.acks import AckPublisher, announce, presence_will
from hub.ingest.batch_core import WriterSettings
from hub.ingest.consumer import Ingest
from hub.ingest.writer_process import WriterProcess
from hub.services.alerts import Alerter
from hub.services.commands import Commander
from hub.services.discovery import HaDiscovery
from hub.services.feed import Feed
from hub.services.housekeeping import Housekeeper
from hub.storage.database import Store
from hub.storage.events import EventLog
from hub.storage.nodes import Registry
from shared.config import redacted
from shared.errors import MaskwatchError
from shared.mqtt import MqttClient
from shared.shutdown import ShutdownSignals

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubParts:
    """The running parts of a hub that callers (tests, benchmarks) look at."""

    store: Store
    ingest: Ingest
    writer: WriterProcess | None
    http_port: int


def build_hub(config: HubConfig, stopping: threading.Event, stack: ExitStack) -> HubParts:
    """Build and start every part of the hub; each part's close goes on ``stack`` as it is started, so closing
    the stack stops them in reverse order: HTTP, housekeeping, discovery, ingest (flush and ack), writer,
    MQTT clients, database.

    :raises MaskwatchError: the database cannot be upgraded or the API cannot listen.
    """
    cfg = config  # short: used on most lines below
    store = Store(cfg.db_url)
    stack.callback(store.close)
    store.migrate()
    events, registry, feed = EventLog(store, cfg.snapshot_dir), Registry(store), Feed()
    client_id = cfg.broker.client_id or f"maskwatch-hub-{cfg.hub_id}"
    intake = MqttClient(
        cfg.broker,
        client_id,
        persistent=True,
        manual_ack=True,
        will=presence_will(cfg.hub_id),
        on_connect=lambda: announce(intake.publish, cfg.hub_id),
    )
    control = MqttClient(cfg.broker.model_copy(update={"client_id": None}), f"{client_id}-control")
    stack.callback(control.stop, publish_will=False)
    stack.callback(intake.stop, publish_will=True)  # its will says the hub is offline
    services = HubServices(
        config=cfg,
        store=store,
        events=events,
        registry=registry,
        feed=feed,
        mqtt_connected=lambda: intake.connected,
        stopping=stopping,
    )
    alerter = Alerter(
        lambda topic, alert: control.publish(topic, alert, qos=1),
        cooldown_s=cfg.alerts.cooldown_s,
        public_url=services.public_url,
    )
    settings = WriterSettings.from_config(cfg, services.public_url)
    writer = None
    if cfg.ingest.writer_process:
        writer = WriterProcess(settings)
        stack.callback(writer.stop)
        writer.start()
    acks = AckPublisher(cfg.hub_id, lambda topic, payload: control.publish(topic, payload, qos=1))
    ingest = services.ingest = Ingest(cfg, intake, writer or settings.build(store), events, alerter, feed, acks=acks)
    services.commander = Commander(control, timeout_s=cfg.command_timeout_s, store=store, registry=registry)
    scopes: list[str | None] = list(cfg.sites) or [None]  # None: every site
    for site in scopes:
        services.commander.listen(site)
    stack.callback(ingest.stop)
    ingest.start()
    control.start()
    intake.start()
    if cfg.homeassistant.enabled:
        discovery = HaDiscovery(
            cfg.broker.model_copy(update={"client_id": None}), cfg.homeassistant, cfg.sites, client_id=f"{client_id}-ha"
        )
        stack.callback(discovery.stop)
        discovery.start()
    housekeeper = Housekeeper(cfg, store, registry, alerter)
    stack.callback(housekeeper.stop)
    housekeeper.start()
    http_port = _serve_http(services, stack, stopping)
    log.info("hub %s: API on http://%s:%s, database %s", cfg.hub_id, cfg.http.host, http_port, store.safe_url)
    if not cfg.auth.enabled:
        log.warning(
            "API auth is off (no auth.tokens): anyone reaching %s:%s can read and send commands",
            cfg.http.host,
            http_port,
        )
    return HubParts(store=store, ingest=ingest, writer=writer, http_port=http_port)


def _serve_http(services: HubServices, stack: ExitStack, stopping: threading.Event, timeout: float = 10.0) -> int:
    """Serve the API on the ``hub-http`` thread; return the port it listens on."""
    http = services.config.http
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(services),
            host=http.host,
            port=http.port,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=3,
            log_config=None,
        )
    )  # keep the process's logging as configured
    thread = threading.Thread(target=server.run, name="hub-http", daemon=True)

    def stop_http() -> None:
        server.should_exit = True
        thread.join(10)

    stack.callback(stop_http)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        stopping.wait(0.05)
    if not server.started:
        raise MaskwatchError(f"the API could not listen on {http.host}:{http.port}")
    sockets = [sock for srv in server.servers for sock in srv.sockets]
    return sockets[0].getsockname()[1] if sockets else http.port


class HubApp:
    """Runs a hub: :func:`build_hub` on :meth:`start`, everything closed in reverse order on :meth:`stop`.

    :param config: the hub configuration.
    """

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.stopping = threading.Event()
        self._running = ExitStack()

    def start(self) -> None:
        """Upgrade the database, connect, start every thread and the API (a part that fails closes the others)."""
        log.info("starting hub with %s", redacted(self.config))
        with ExitStack() as stack:
            self.parts = build_hub(self.config, self.stopping, stack)
            self._running = stack.pop_all()

    @property
    def ingest(self) -> Ingest:
        """The ingest of the running hub."""
        return self.parts.ingest

    @property
    def http_port(self) -> int:
        """The port the API listens on (the configured one, or the one picked for port 0)."""
        return self.parts.http_port

    def run(self) -> None:
        """Start, then block until SIGINT/SIGTERM, then stop cleanly."""
        with ShutdownSignals(self.stopping):
            try:
                self.start()
                self.stopping.wait()
            finally:
                self.stop()

    def stop(self) -> None:
        """Stop consuming, flush and acknowledge what is queued, close everything (idempotent)."""
        self.stopping.set()
        self._running.close()
        log.info("hub stopped")
