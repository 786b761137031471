"""An MQTT broker inside this process (amqtt), for the demo site on machines without Mosquitto.

Its limits, which the demo respects: MQTT 3.1.1 only (no MQTT 5 session expiry,
no shared subscriptions), and it is slower than Mosquitto. It listens on a
loopback port and runs its asyncio loop on a thread of its own, so it offers the
same ``start``/``stop``/``host``/``port``/``address`` as
:class:`devsite.broker.LocalMosquitto`.

Example::

    broker = EmbeddedBroker().start()
    print(broker.address)
    broker.stop()
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from devsite.broker import free_port, wait_for_port
from shared.config import MqttProtocol
from shared.errors import MaskwatchError

log = logging.getLogger(__name__)

#: MQTT protocol version the embedded broker speaks.
PROTOCOL: MqttProtocol = 311


class EmbeddedBroker:
    """amqtt on ``host:port`` (a free loopback port by default), anonymous, no ``$SYS`` topics.

    :param port: fixed port, or ``None`` for a free one.
    :param host: bind address.
    """

    protocol = PROTOCOL

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        """Start the broker thread and wait until it accepts connections."""
        from amqtt.broker import Broker  # the demo's optional dependency, imported when used

        config = {
            "listeners": {"default": {"type": "tcp", "bind": self.address}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        # amqtt logs every client that leaves (and our port probe) as an error; transitions logs every state
        logging.getLogger("amqtt").setLevel(logging.CRITICAL)
        logging.getLogger("transitions").setLevel(logging.WARNING)
        self._loop = asyncio.new_event_loop()
        self._broker = Broker(config, loop=self._loop)
        self._thread = threading.Thread(target=self._serve, name="amqtt-broker", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout) or self._error or not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise MaskwatchError(f"the embedded MQTT broker did not start on {self.address}: {self._error}")
        log.info("embedded MQTT 3.1.1 broker (amqtt) running on %s", self.address)
        return self

    def _serve(self) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._broker.start())
        except Exception as exc:
            self._error = exc
            log.exception("embedded broker failed to start")
        else:
            self._started.set()
            self._loop.run_forever()
        finally:
            self._started.set()
            pending = asyncio.all_tasks(self._loop)
            for task in pending:  # amqtt leaves per-client tasks behind after shutdown
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Shut the broker down and join its thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive() and loop.is_running():
            future = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), loop)
            try:
                future.result(timeout)
            except Exception:
                log.exception("embedded broker did not shut down cleanly")
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._loop = self._thread = None
