"""Periodic work of the hub on the ``hub-housekeeping`` thread: offline-node alerts and retention."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.exc import SQLAlchemyError

from hub.config import HubConfig
from hub.services.alerts import Alerter
from hub.storage.database import Store
from hub.storage.nodes import Registry
from shared.messages import utc_now

log = logging.getLogger(__name__)


class Housekeeper:
    """Raises an alert for each node offline longer than ``alerts.offline_after_s`` (once per outage),
    and prunes data older than ``retention.days`` every ``retention.interval_s``.
    """

    def __init__(self, config: HubConfig, store: Store, registry: Registry, alerter: Alerter) -> None:
        self.config = config
        self.store = store
        self.registry = registry
        self.alerter = alerter
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hub-housekeeping", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def check_offline(self) -> int:
        """Alert for overdue offline nodes now; return how many alerts were raised."""
        now = utc_now()
        with self.store.transaction() as session:
            rows = self.registry.claim_overdue(session, now, self.config.alerts.offline_after_s)
            alerts = self.alerter.for_offline(session, rows, now)
        self.alerter.publish(alerts)
        return len(alerts)

    def _run(self) -> None:
        next_prune = time.monotonic()
        while True:
            try:
                self.check_offline()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + self.config.retention.interval_s
                    self.store.prune(self.config.retention.days, self.config.snapshot_dir)
            except (SQLAlchemyError, OSError):
                log.exception("housekeeping failed; trying again later")
            if self._stop.wait(self.config.alerts.check_every_s):
                return
