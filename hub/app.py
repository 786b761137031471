"""The composition root of the hub: builds the parts, starts them, stops them in reverse order.

Threads: paho's network threads (intake and control clients), ``hub-ingest``
(batches to the writer, acks), ``hub-housekeeping`` (offline alerts, retention),
``hub-http`` (uvicorn serving the API), and ``ha-discovery`` when Home Assistant
discovery is on. Process: ``maskwatch-hub-writer`` validates and stores the
batches (:mod:`hub.writer`; ``ingest.writer_process: false`` keeps it in the hub process).

Example::

    app = HubApp(load_config(HubConfig, "hub.yaml"))
    app.run()          # until SIGINT/SIGTERM: stop consuming, flush, close
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

import uvicorn

from hub.acks import AckPublisher, announce, presence_will
from hub.alerts import Alerter
from hub.api import HubServices, create_app
from hub.batches import WriterSettings
from hub.commands import Commander
from hub.config import HubConfig
from hub.discovery import HaDiscovery
from hub.events import EventLog
from hub.feed import Feed
from hub.housekeeping import Housekeeper
from hub.ingest import Ingest
from hub.registry import Registry
from hub.store import Store
from hub.writer import WriterProcess
from shared.config import redacted
from shared.errors import MaskwatchError
from shared.mqtt import MqttClient

log = logging.getLogger(__name__)


class HubApp:
    """Wires store, MQTT clients, ingest, commander, housekeeping and the HTTP API.

    :param config: the hub configuration.
    """

    def __init__(self, config: HubConfig) -> None:
        self.config = config
        self.stopping = threading.Event()
        self.store: Store | None = None
        self.ingest: Ingest | None = None
        self._writer: WriterProcess | None = None
        self._intake: MqttClient | None = None
        self._control: MqttClient | None = None
        self._housekeeper: Housekeeper | None = None
        self._discovery: HaDiscovery | None = None
        self._server: uvicorn.Server | None = None
        self._http_thread: threading.Thread | None = None
        self.http_port: int | None = None

    def start(self) -> None:
        """Upgrade the database, connect, start every thread and the API."""
        cfg = self.config
        log.info("starting hub with %s", redacted(cfg))
        self.store = store = Store(cfg.db_url)
        store.migrate()
        events, registry, feed = EventLog(store, cfg.snapshot_dir), Registry(store), Feed()
        client_id = cfg.broker.client_id or f"maskwatch-hub-{cfg.hub_id}"
        intake = self._intake = MqttClient(cfg.broker, client_id, persistent=True, manual_ack=True,
                                           will=presence_will(cfg.hub_id),
                                           on_connect=lambda: announce(intake.publish, cfg.hub_id))
        self._control = control = MqttClient(cfg.broker.model_copy(update={"client_id": None}),
                                             f"{client_id}-control")
        services = HubServices(config=cfg, store=store, events=events, registry=registry, feed=feed,
                               mqtt_connected=lambda: bool(self._intake and self._intake.connected),
                               stopping=self.stopping)
        alerter = Alerter(lambda topic, alert: control.publish(topic, alert, qos=1),
                          cooldown_s=cfg.alerts.cooldown_s, public_url=services.public_url)
        settings = WriterSettings.from_config(cfg, services.public_url)
        if cfg.ingest.writer_process:
            self._writer = WriterProcess(settings)
            self._writer.start()
        acks = AckPublisher(cfg.hub_id, lambda topic, payload: control.publish(topic, payload, qos=1))
        self.ingest = services.ingest = Ingest(cfg, self._intake, self._writer or settings.build(store), events,
                                               alerter, feed, acks=acks)
        services.commander = Commander(control, timeout_s=cfg.command_timeout_s, store=store, registry=registry)
        for site in cfg.sites or [None]:
            services.commander.listen(site)
        self.ingest.start()
        control.start()
        self._intake.start()
        self._housekeeper = Housekeeper(cfg, store, registry, alerter)
        self._housekeeper.start()
        if cfg.homeassistant.enabled:
            self._discovery = HaDiscovery(cfg.broker.model_copy(update={"client_id": None}), cfg.homeassistant,
                                          cfg.sites, client_id=f"{client_id}-ha")
            self._discovery.start()
        server = uvicorn.Server(uvicorn.Config(create_app(services), host=cfg.http.host, port=cfg.http.port,
                                               log_level="warning", lifespan="off", timeout_graceful_shutdown=3,
                                               log_config=None))  # keep the process's logging as configured
        self._server = server
        self._http_thread = threading.Thread(target=server.run, name="hub-http", daemon=True)
        self._http_thread.start()
        if not self._wait_http(server):
            self.stop()
            raise MaskwatchError(f"the API could not listen on {cfg.http.host}:{cfg.http.port}")
        log.info("hub %s: API on http://%s:%s, database %s", cfg.hub_id, cfg.http.host, self.http_port,
                 store.safe_url)
        if not cfg.auth.enabled:
            log.warning("API auth is off (no auth.tokens): anyone reaching %s:%s can read and send commands",
                        cfg.http.host, self.http_port)

    def _wait_http(self, server: uvicorn.Server, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while not server.started and time.monotonic() < deadline:
            if self._http_thread is None or not self._http_thread.is_alive():
                return False
            self.stopping.wait(0.05)
        if not server.started:
            return False
        sockets = [sock for srv in server.servers for sock in srv.sockets]
        self.http_port = sockets[0].getsockname()[1] if sockets else self.config.http.port
        return True

    def run(self) -> None:
        """Start, then block until SIGINT/SIGTERM (or :meth:`request_stop`), then stop cleanly."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.start()
            self.stopping.wait()
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        self.stopping.set()

    def request_stop(self) -> None:
        self.stopping.set()

    def stop(self) -> None:
        """Stop consuming, flush and acknowledge what is queued, close everything (idempotent)."""
        self.stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._http_thread is not None:
            self._http_thread.join(10)
            self._http_thread = None
        if self._housekeeper is not None:
            self._housekeeper.stop()
            self._housekeeper = None
        if self._discovery is not None:
            self._discovery.stop()
            self._discovery = None
        if self.ingest is not None:
            self.ingest.stop()
            self.ingest = None
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        for client in (self._intake, self._control):
            if client is not None:
                client.stop(publish_will=client is self._intake)  # the intake's will: the hub is offline
        self._intake = self._control = None
        if self.store is not None:
            self.store.close()
            self.store = None
        log.info("hub stopped")
