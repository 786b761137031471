"""Home Assistant MQTT discovery: every node of a site appears in Home Assistant as a device.

For each node the hub has seen (on its retained ``status``), it publishes retained
discovery configs on ``homeassistant/<component>/maskwatch_<site>_<node>_<key>/config``:

===============  =====================  ==============================================
component        entity                 reads / writes
===============  =====================  ==============================================
binary_sensor    No mask in view        ``.../summary`` (published by this module)
event            Mask event             ``.../events`` (``new`` messages)
sensor           Mask compliance (%)    ``.../summary``
sensor           Frame rate             ``.../stats``
number           No-mask threshold      ``.../state``, commands on ``.../cmd/threshold``
number           Servo angle            ``.../state``, commands on ``.../cmd/servo``
select           Servo mode             ``.../state``, commands on ``.../cmd/servo``
binary_sensor    Scheduled detection    ``.../state`` (``schedule.detect``; on without a schedule)
binary_sensor    Servo parked           ``.../state`` (``schedule.parked``)
binary_sensor    Quiet hours            ``.../state`` (``schedule.quiet``)
sensor           Next schedule change   ``.../state`` (``schedule.next_change``, a timestamp)
===============  =====================  ==============================================

Availability comes from the node's ``status`` (``online``/``offline``, its Last
Will). Home Assistant's command templates render the contract's command JSON
(with a fresh ``request_id``), so commands reach the node exactly as the hub's own
would. The configs are sent again whenever Home Assistant announces itself with
``online`` on ``homeassistant/status``.

Example::

    discovery = HaDiscovery(BrokerConfig(port=1883), HomeAssistantConfig(enabled=True), sites=["hq"])
    discovery.start()
    ...
    discovery.stop()
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hub.config import HomeAssistantConfig
from hub.services.summary import NodeSummaries
from shared import __version__
from shared.config import BrokerConfig
from shared.errors import ContractError
from shared.logcap import LogCap
from shared.messages import Event, NodeState, parse, utc_now
from shared.mqtt import MqttClient, Received
from shared.topics import HA_STATUS, NodeTopics, ha_discovery, node_filter, parse_topic
from shared.vocabulary import ServoMode

log = logging.getLogger(__name__)

#: Renders a request id that is new on every command Home Assistant sends.
REQUEST_ID = "ha-{{ now().timestamp() }}"
#: The binary sensors of a node's schedule state: key -> (name, field of ``state.schedule``, value without a
#: schedule, icon).
SCHEDULE_SENSORS: dict[str, tuple[str, str, bool, str]] = {
    "schedule_detect": ("Scheduled detection", "detect", True, "mdi:calendar-clock"),
    "schedule_parked": ("Servo parked", "parked", False, "mdi:parking"),
    "schedule_quiet": ("Quiet hours", "quiet", False, "mdi:bell-sleep"),
}


def _schedule_flag(field: str, default: bool) -> str:
    """Value template of one schedule flag: ON/OFF from ``state.schedule``, ``default`` when it is absent."""
    fallback = "ON" if default else "OFF"
    return (
        f"{{{{ ('ON' if value_json.schedule.{field} else 'OFF') if value_json.schedule is defined "
        f"else '{fallback}' }}}}"
    )


@dataclass(frozen=True)
class Limits:
    """Servo limits of a node, from its ``state`` (defaults until one arrives)."""

    min_deg: float = -90.0
    max_deg: float = 90.0


def entity_configs(
    site: str, node: str, limits: Limits = Limits(), model: str | None = None
) -> dict[str, dict[str, Any]]:
    """Discovery topic -> config payload for every entity of one node."""
    topics = NodeTopics(site, node)
    prefix = f"maskwatch_{site}_{node}"
    device: dict[str, Any] = {
        "identifiers": [prefix],
        "name": f"Maskwatch {site} {node}",
        "manufacturer": "Maskwatch",
        "model": "edge node",
    }
    if model:
        device["sw_version"] = model
    common = {
        "device": device,
        "availability": [{"topic": topics.status, "payload_available": "online", "payload_not_available": "offline"}],
        "origin": {"name": "maskwatch", "sw_version": __version__},
    }
    entities: dict[tuple[str, str], dict[str, Any]] = {
        ("binary_sensor", "no_mask"): {
            "name": "No mask in view",
            "device_class": "problem",
            "state_topic": topics.summary,
            "value_template": "{{ 'ON' if value_json.no_mask_in_view else 'OFF' }}",
        },
        ("event", "mask_event"): {
            "name": "Mask event",
            "state_topic": topics.events,
            "event_types": ["mask", "no_mask"],
            # only 'new' messages fire; an empty rendering is ignored by Home Assistant
            "value_template": (
                '{% if value_json.type == \'new\' %}{"event_type": "{{ value_json.label }}", '
                '"event_id": "{{ value_json.id }}", "score": {{ value_json.score }}}'
                "{% endif %}"
            ),
        },
        ("sensor", "compliance"): {
            "name": "Mask compliance",
            "state_topic": topics.summary,
            "unit_of_measurement": "%",
            "state_class": "measurement",
            "icon": "mdi:face-mask",
            "value_template": (
                "{{ (value_json.compliance * 100) | round(1) if value_json.compliance is number else None }}"
            ),
        },
        ("sensor", "fps"): {
            "name": "Frame rate",
            "state_topic": topics.stats,
            "unit_of_measurement": "fps",
            "state_class": "measurement",
            "entity_category": "diagnostic",
            "icon": "mdi:speedometer",
            "value_template": "{{ value_json.fps }}",
        },
        ("number", "threshold"): {
            "name": "No-mask threshold",
            "state_topic": topics.state,
            "value_template": "{{ value_json.threshold }}",
            "command_topic": topics.cmd("threshold"),
            "min": 0.0,
            "max": 1.0,
            "step": 0.01,
            "mode": "box",
            "entity_category": "config",
            "command_template": f'{{"v": 1, "request_id": "{REQUEST_ID}", "value": {{{{ value }}}}}}',
        },
        ("number", "servo_angle"): {
            "name": "Servo angle",
            "state_topic": topics.state,
            "value_template": "{{ value_json.servo.angle }}",
            "command_topic": topics.cmd("servo"),
            "min": limits.min_deg,
            "max": limits.max_deg,
            "step": 1,
            "unit_of_measurement": "°",
            "mode": "slider",
            "command_template": f'{{"v": 1, "request_id": "{REQUEST_ID}", "angle": {{{{ value }}}}}}',
        },
        ("select", "servo_mode"): {
            "name": "Servo mode",
            "state_topic": topics.state,
            "value_template": "{{ value_json.servo.mode }}",
            "command_topic": topics.cmd("servo"),
            "options": [mode.value for mode in ServoMode],
            "command_template": f'{{"v": 1, "request_id": "{REQUEST_ID}", "mode": "{{{{ value }}}}"}}',
        },
        **{
            ("binary_sensor", key): {
                "name": name,
                "state_topic": topics.state,
                "icon": icon,
                "value_template": _schedule_flag(field, default),
            }
            for key, (name, field, default, icon) in SCHEDULE_SENSORS.items()
        },
        ("sensor", "schedule_next_change"): {
            "name": "Next schedule change",
            "state_topic": topics.state,
            "device_class": "timestamp",
            "entity_category": "diagnostic",
            "value_template": (
                "{{ value_json.schedule.next_change if value_json.schedule is defined "
                "and value_json.schedule.next_change is defined else None }}"
            ),
        },
    }
    configs = {}
    for (component, key), entity in entities.items():
        object_id = f"{prefix}_{key}"
        # entity ids allow [a-z0-9_] only (Home Assistant >= 2025.10 takes default_entity_id, not object_id)
        entity_id = f"{component}.{object_id.replace('-', '_')}"
        configs[ha_discovery(component, object_id)] = {
            **entity,
            "unique_id": object_id,
            "default_entity_id": entity_id,
            **common,
        }
    return configs


class HaDiscovery:
    """Publishes discovery configs and node summaries for Home Assistant; one worker thread.

    :param broker: the site's broker.
    :param config: the ``homeassistant`` section of the hub config.
    :param sites: sites to follow (empty: every site).
    :param client_id: MQTT client id of this publisher.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        config: HomeAssistantConfig,
        sites: list[str] | None = None,
        client_id: str = "maskwatch-hub-ha",
    ) -> None:
        self.config = config
        self.sites = list(sites or [])
        self.summaries = NodeSummaries(window_s=config.window_s, open_ttl_s=config.open_ttl_s)
        self.client = MqttClient(broker, client_id)
        self.sent_configs = 0
        #: invalid payloads ignored, by reason (json, schema, version, oversize, topic)
        self.rejected: Counter[str] = Counter()
        self._reject_log = LogCap(log, "ignored messages")
        self._inbox: queue.Queue[Received | None] = queue.Queue(maxsize=10_000)
        self._nodes: dict[tuple[str, str], tuple[Limits, str | None]] = {}
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._run, name="ha-discovery", daemon=True)

    def start(self) -> None:
        """Subscribe and start the worker; returns at once (connection happens in the background)."""
        scopes: list[str | None] = list(self.sites) or [None]  # None: every site
        for site in scopes:
            for kind in ("status", "state", "events"):
                self.client.subscribe(node_filter(kind, site), self._enqueue, qos=1)
        self.client.subscribe(HA_STATUS, self._enqueue, qos=1)
        self._worker.start()
        self.client.start()

    def stop(self) -> None:
        """Stop the worker and disconnect."""
        self._stopping.set()
        self._inbox.put(None)
        if self._worker.is_alive():
            self._worker.join(10)
        self.client.stop()

    def _enqueue(self, message: Received) -> None:  # network thread: enqueue only
        try:
            self._inbox.put_nowait(message)
        except queue.Full:
            log.warning("Home Assistant discovery is behind; dropped a message on %s", message.topic)

    def _run(self) -> None:
        every = self.config.summary_every_s
        next_tick = utc_now().timestamp() + every
        while not self._stopping.is_set():
            try:
                message = self._inbox.get(timeout=max(0.0, next_tick - utc_now().timestamp()))
            except queue.Empty:
                message = None
            try:
                if message is not None:
                    self._handle(message)
                elif utc_now().timestamp() >= next_tick:
                    next_tick = utc_now().timestamp() + every
                    self.summaries.expire(utc_now())
                    for site, node in self.summaries.nodes():
                        self._publish_summary(site, node)
            except ContractError as exc:
                self.rejected[exc.reason] += 1
                self._reject_log.warning(exc.reason, "ignored %s: %s", message.topic if message else "tick", exc)
            except Exception:
                log.exception("Home Assistant discovery failed on %s", message.topic if message else "tick")

    def _handle(self, message: Received) -> None:
        if message.topic == HA_STATUS:
            if message.payload.strip() == b"online":
                log.info("Home Assistant is online: sending discovery for %d nodes", len(self._nodes))
                for site, node in list(self._nodes):
                    self._publish_configs(site, node)
                    self._publish_summary(site, node)
            return
        info = parse_topic(message.topic)
        assert info.node is not None
        key = (info.site, info.node)
        if info.kind == "status":
            if key not in self._nodes and message.payload.strip() in (b"online", b"offline"):
                self._nodes[key] = (Limits(), None)
                self._publish_configs(*key)
                self._publish_summary(*key)
        elif info.kind == "state":
            state = parse(NodeState, message.payload)
            seen = (Limits(state.servo.min_deg, state.servo.max_deg), state.model)
            if self._nodes.get(key) != seen:
                self._nodes[key] = seen
                self._publish_configs(*key)
        elif info.kind == "events" and self.summaries.apply(parse(Event, message.payload)):
            self._publish_summary(*key)

    def _publish_configs(self, site: str, node: str) -> None:
        limits, model = self._nodes.get((site, node), (Limits(), None))
        for topic, payload in entity_configs(site, node, limits, model).items():
            self.client.publish(topic, json.dumps(payload), qos=1, retain=True)
            self.sent_configs += 1
        log.debug("discovery configs sent for %s/%s", site, node)

    def _publish_summary(self, site: str, node: str) -> None:
        summary = self.summaries.summary(site, node, utc_now())
        # compliance stays in the payload as null: templates read it
        self.client.publish(NodeTopics(site, node).summary, summary.model_dump_json().encode(), qos=1, retain=True)
