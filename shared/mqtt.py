"""The one MQTT wrapper: the only module of Maskwatch that imports paho-mqtt.

:class:`MqttClient` owns the protocol version, client id, Last Will, TLS,
persistent sessions, reconnect with capped exponential backoff, and
subscriptions, which it renews on every connect. Everyone else calls
:meth:`MqttClient.publish` and :meth:`MqttClient.subscribe`.

Handlers run on paho's network thread: they must only decode, validate and
enqueue (never sleep or wait for a publish there).

Example::

    client = MqttClient(BrokerConfig(port=1883), "maskwatch-demo",
                        will=Will(NodeTopics("hq", "door-1").status, b"offline"))
    client.subscribe("maskwatch/hq/+/events", lambda msg: print(msg.topic))
    client.start()
    client.wait_connected(5)
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel

from shared.config import BrokerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    """A message as handed to a subscription handler."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int


@dataclass(frozen=True)
class Will:
    """Last Will: published by the broker if the client vanishes, and by :meth:`MqttClient.stop`."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


Handler = Callable[[Received], None]

#: Topics whose matching handlers are remembered; the cache starts over when it is full.
ROUTE_CACHE_MAX = 4096
#: Length at which the list of QoS 1 publishes kept for :meth:`MqttClient.stop` is first cleared of acknowledged ones.
PRUNE_AT = 256


def _acknowledged(info: paho.MQTTMessageInfo) -> bool:
    """Whether a publish is done; ``False`` for one paho gave up on (its ``rc`` an error, e.g. a QoS 0 will whose
    connection was lost: ``is_published()`` raises for those)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


def _strip_share(topic_filter: str) -> str:
    if topic_filter.startswith("$share/"):
        return topic_filter.split("/", 2)[2]
    return topic_filter


def _call_hook(name: str, hook: Callable[..., None] | None, *args: object) -> None:
    """Run a user hook on the network thread; an error in it is logged, never raised into paho."""
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:
        log.exception("%s hook failed", name)


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (``$share/<group>/`` prefixes are ignored)."""
    return paho.topic_matches_sub(_strip_share(topic_filter), topic)


class MqttClient:
    """A reconnecting MQTT client.

    :param broker: where and how to connect.
    :param client_id: stable id; with ``persistent=True`` the broker keeps the
        session (subscriptions and queued QoS 1 messages) across disconnects.
    :param will: Last Will, also published on a clean :meth:`stop`.
    :param persistent: keep the session (MQTT 5 session expiry, or 3.1.1 clean_session=False).
    :param manual_ack: acknowledge received QoS 1 messages only when :meth:`ack` is called.
    :param on_connect: called on the network thread after every successful connect,
        once subscriptions are renewed (re-publish retained state here).
    :param on_publish: called with the message id when the broker acknowledged a publish.
    :param on_refused: called with the message id and the reason instead of ``on_publish`` when the broker
        refused a publish (MQTT 5 PUBACK reason code >= 0x80, e.g. "Not authorized" from its ACL).
    :param on_disconnect: called after the connection is lost.

    A refused connection (CONNACK), subscription (SUBACK) or publish (PUBACK) is kept in :attr:`refusals`
    (cause -> reason, e.g. ``{"publish to maskwatch/hq/door-1/events": "Not authorized"}``) until the same
    succeeds, and logged once per cause.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        client_id: str,
        *,
        will: Will | None = None,
        persistent: bool = False,
        manual_ack: bool = False,
        on_connect: Callable[[], None] | None = None,
        on_publish: Callable[[int], None] | None = None,
        on_refused: Callable[[int, str], None] | None = None,
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        self.broker = broker
        self.client_id = broker.client_id or client_id
        self.will = will
        self.persistent = persistent
        self._on_connect_hook = on_connect
        self._on_publish_hook = on_publish
        self._on_refused_hook = on_refused
        self._on_disconnect_hook = on_disconnect
        self._subscriptions: dict[str, tuple[int, Handler]] = {}
        self._routes: dict[str, list[Handler]] = {}  # topic -> matching handlers
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._stopping = False
        self.connects = 0
        self.last_error: str | None = None
        self.refusals: dict[str, str] = {}
        self._logged_refusals: set[tuple[str, str]] = set()
        self._subscribing: dict[int, str] = {}  # SUBSCRIBE mid -> filter, until its SUBACK
        self._unacknowledged: list[paho.MQTTMessageInfo] = []  # QoS 1 publishes, for stop() to wait on
        self._prune_at = PRUNE_AT
        self._v5 = broker.protocol == 5
        if self._v5:
            self._client = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5, manual_ack=manual_ack
            )
        else:
            self._client = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=paho.MQTTv311,
                clean_session=not persistent,
                manual_ack=manual_ack,
            )
        self._client.enable_logger(logging.getLogger("paho"))
        min_s, max_s = broker.reconnect_min_s, broker.reconnect_max_s
        self._client.reconnect_delay_set(min_s, max_s)  # type: ignore[arg-type]  # paho says int; float s work
        self._client.max_inflight_messages_set(100)
        if broker.username:
            self._client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            self._client.tls_set(
                ca_certs=str(broker.tls.ca_certs) if broker.tls.ca_certs else None,
                certfile=str(broker.tls.certfile) if broker.tls.certfile else None,
                keyfile=str(broker.tls.keyfile) if broker.tls.keyfile else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            self._client.tls_insecure_set(broker.tls.insecure)
        if will:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_message = self._handle_message
        self._client.on_publish = self._handle_publish
        self._client.on_subscribe = self._handle_subscribe
        self._client.on_connect_fail = self._handle_connect_fail
        self._client.on_socket_open = self._handle_socket_open

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; reconnects forever with backoff until :meth:`stop`."""
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            if self.persistent:
                props.SessionExpiryInterval = self.broker.session_expiry_s
            self._client.connect_async(
                self.broker.host,
                self.broker.port,
                keepalive=self.broker.keepalive_s,
                clean_start=not self.persistent,
                properties=props,
            )
        else:
            self._client.connect_async(self.broker.host, self.broker.port, keepalive=self.broker.keepalive_s)
        self._client.loop_start()

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until connected (or ``timeout`` seconds); return whether connected."""
        return self._connected.wait(timeout)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def stop(self, *, publish_will: bool = True, timeout: float = 5.0) -> None:
        """Publish the will payload (if any and connected), wait up to ``timeout`` seconds for the broker to
        acknowledge every QoS 1 message published so far, disconnect, stop the network thread.

        Without the wait, messages beyond paho's in-flight window, still queued in the client, would be dropped
        by the disconnect. While offline nothing is waited for: what is queued in memory is lost (see
        :meth:`publish`).
        """
        self._stopping = True
        if publish_will and self.will and self.connected:
            will = self._client.publish(self.will.topic, self.will.payload, qos=self.will.qos, retain=self.will.retain)
            if will.rc == paho.MQTT_ERR_SUCCESS:
                with self._lock:
                    self._unacknowledged.append(will)
        if self.connected:
            self._wait_acknowledged(timeout)
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    # -- publish / subscribe --------------------------------------------------

    def publish(
        self, topic: str, payload: bytes | str | BaseModel, *, qos: int = 0, retain: bool = False
    ) -> paho.MQTTMessageInfo:
        """Publish; returns paho's handle (``mid``, ``rc``). While offline, QoS 1 is queued in memory only."""
        if isinstance(payload, BaseModel):
            data: bytes | str = payload.model_dump_json(exclude_none=True).encode()
        else:
            data = payload
        info = self._client.publish(topic, data, qos=qos, retain=retain)
        if qos > 0 and info.rc == paho.MQTT_ERR_SUCCESS:  # taken while connected (paho cannot wait on the others)
            with self._lock:
                if len(self._unacknowledged) >= self._prune_at:  # amortized: the list stays about twice in-flight
                    self._unacknowledged = [i for i in self._unacknowledged if not _acknowledged(i)]
                    self._prune_at = max(PRUNE_AT, 2 * len(self._unacknowledged))
                self._unacknowledged.append(info)
        return info

    def _wait_acknowledged(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds in all until every QoS 1 message published so far is acknowledged."""
        deadline = time.monotonic() + timeout
        with self._lock:
            waiting, self._unacknowledged = self._unacknowledged, []
        for info in waiting:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                info.wait_for_publish(remaining)
            except (RuntimeError, ValueError):  # paho gave up on it: nothing to wait for
                continue
        lost = sum(not _acknowledged(info) for info in waiting)
        if lost:
            log.warning("stopping with %d QoS 1 messages the broker has not acknowledged after %.1f s", lost, timeout)

    def subscribe(self, topic_filter: str, handler: Handler, *, qos: int = 1) -> None:
        """Route messages matching ``topic_filter`` to ``handler``; renewed on every connect."""
        with self._lock:
            self._subscriptions[topic_filter] = (qos, handler)
            self._routes.clear()
        if self.connected:
            self._send_subscribe(topic_filter, qos)

    def _send_subscribe(self, topic_filter: str, qos: int) -> None:
        _rc, mid = self._client.subscribe(topic_filter, qos=qos)
        if mid is not None:
            self._subscribing[mid] = topic_filter

    def _refused(self, cause: str, reason: str) -> None:
        """Keep a refusal in :attr:`refusals`; log it once per cause and reason."""
        self.refusals[cause] = reason
        if (cause, reason) not in self._logged_refusals:
            self._logged_refusals.add((cause, reason))
            log.error("broker %s refused %s: %s", self.broker.address, cause, reason)

    def unsubscribe(self, topic_filter: str) -> None:
        with self._lock:
            self._subscriptions.pop(topic_filter, None)
            self._routes.clear()
        if self.connected:
            self._client.unsubscribe(topic_filter)

    def ack(self, mid: int, qos: int) -> None:
        """Acknowledge a received message (with ``manual_ack=True``)."""
        self._client.ack(mid, qos)

    # -- paho callbacks (network thread) --------------------------------------

    def _handle_connect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.ConnectFlags,
        reason_code: paho.ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.last_error = str(reason_code)
            self._refused("the connection", str(reason_code))
            return
        self.connects += 1
        self.last_error = None
        self.refusals.pop("the connection", None)
        with self._lock:
            subs = list(self._subscriptions.items())
        for topic_filter, (qos, _handler) in subs:
            self._send_subscribe(topic_filter, qos)
        self._connected.set()
        log.info(
            "connected to %s as %s (session present: %s)", self.broker.address, self.client_id, flags.session_present
        )
        _call_hook("on_connect", self._on_connect_hook)

    def _handle_socket_open(self, client: paho.Client, userdata: object, sock: object) -> None:
        # MQTT sends small packets back to back (PUBACK, then an answer): without TCP_NODELAY, Nagle's
        # algorithm holds the second until the broker's delayed ACK, about 40 ms per hop.
        if not isinstance(sock, socket.socket):  # TLS sockets are sockets too; a websocket wrapper is not
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError as exc:
            log.debug("cannot set TCP_NODELAY: %s", exc)

    def _handle_connect_fail(self, client: paho.Client, userdata: object) -> None:
        # paho calls this inside its ``except OSError``: name the cause (refused, TLS certificate...)
        cause = sys.exc_info()[1]
        self.last_error = f"connection failed: {cause}" if cause else "connection failed"
        log.warning("cannot reach broker %s (%s); retrying", self.broker.address, cause or "connection failed")

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: object,
        flags: paho.DisconnectFlags,
        reason_code: paho.ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected:
            log.log(
                logging.INFO if self._stopping else logging.WARNING,
                "disconnected from %s: %s",
                self.broker.address,
                reason_code,
            )
            _call_hook("on_disconnect", self._on_disconnect_hook)

    def _handle_publish(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_code: paho.ReasonCode,
        properties: Properties | None,
    ) -> None:
        # paho calls this before it forgets the message, so its topic can still be named
        message = self._client._out_messages.get(mid)
        topic = message.topic if message is not None else "a topic"
        if reason_code.is_failure:  # MQTT 5: e.g. "Not authorized" when the broker's ACL drops it
            self._refused(f"publish to {topic}", str(reason_code))
            _call_hook("on_refused", self._on_refused_hook, mid, str(reason_code))
            return
        if self.refusals:
            self.refusals.pop(f"publish to {topic}", None)
        _call_hook("on_publish", self._on_publish_hook, mid)

    def _handle_subscribe(
        self,
        client: paho.Client,
        userdata: object,
        mid: int,
        reason_codes: list[paho.ReasonCode],
        properties: Properties | None,
    ) -> None:
        topic_filter = self._subscribing.pop(mid, "a subscription")
        failures = [str(code) for code in reason_codes if code.is_failure]
        if failures:
            self._refused(f"the subscription to {topic_filter}", failures[0])
        else:
            self.refusals.pop(f"the subscription to {topic_filter}", None)

    def _handlers(self, topic: str) -> list[Handler]:
        """The handlers whose filters match ``topic`` (matched once per topic, then remembered)."""
        with self._lock:
            handlers = self._routes.get(topic)
            if handlers is None:
                if len(self._routes) >= ROUTE_CACHE_MAX:
                    self._routes.clear()
                handlers = [h for f, (_q, h) in self._subscriptions.items() if topic_matches(f, topic)]
                self._routes[topic] = handlers
            return handlers

    def _handle_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        received = Received(
            topic=message.topic,
            payload=bytes(message.payload),
            qos=message.qos,
            retain=bool(message.retain),
            mid=message.mid,
        )
        for handler in self._handlers(message.topic):
            try:
                handler(received)
            except Exception:
                log.exception("handler for %s failed", message.topic)
