"""Home Assistant discovery: payload shapes, templates that speak the contract, re-send on HA restart."""

from __future__ import annotations

import json
import queue
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import jinja2
import pytest

from hub.config import HomeAssistantConfig
from hub.services.discovery import HaDiscovery, Limits, entity_configs
from hub.services.summary import NodeSummaries
from shared.config import BrokerConfig
from shared.messages import (
    COMMANDS,
    Event,
    NodeState,
    NodeStats,
    NodeSummary,
    ScheduleState,
    ServoState,
    parse,
    utc_now,
)
from shared.mqtt import MqttClient, Received
from shared.topics import HA_STATUS, NodeTopics, parse_topic

# The keys Home Assistant documents as required per MQTT platform, and the enumerations used here.
REQUIRED = {
    "binary_sensor": {"state_topic"},
    "sensor": {"state_topic"},
    "number": {"command_topic"},
    "select": {"command_topic", "options"},
    "event": {"state_topic", "event_types"},
}
DEVICE_CLASSES = {"binary_sensor": {"problem", "occupancy", "safety", None}}
STATE_CLASSES = {"measurement", "total", "total_increasing", None}
ENTITY_CATEGORIES = {"config", "diagnostic", None}
NUMBER_MODES = {"auto", "box", "slider", None}
DISCOVERY_TOPIC = re.compile(
    r"^homeassistant/(?P<component>[a-z_]+)/(?:[a-zA-Z0-9_-]+/)?(?P<object>[a-zA-Z0-9_-]+)/config$"
)

NOW = utc_now()
STATE = NodeState(
    site="hq",
    node="door-1",
    ts=NOW,
    threshold=0.35,
    detect=True,
    model="m@1",
    servo=ServoState(angle=-30.0, mode="sweep", min_deg=-90, max_deg=90),
)


def _render(template: str, **variables: Any) -> str:
    env = jinja2.Environment()
    env.globals["now"] = utc_now
    return env.from_string(template).render(**variables)


def test_payloads_have_the_documented_shape() -> None:
    configs = {**entity_configs("hq", "door-1"), **entity_configs("hq", "door-2", Limits(-180, 180), "m@1")}
    assert len(configs) == 22
    unique_ids = [c["unique_id"] for c in configs.values()]
    assert len(set(unique_ids)) == len(unique_ids)
    for topic, config in configs.items():
        match = DISCOVERY_TOPIC.match(topic)
        assert match, topic
        component = match["component"]
        assert REQUIRED[component] <= config.keys(), (topic, REQUIRED[component] - config.keys())
        assert match["object"] == config["unique_id"]
        assert re.fullmatch(rf"{component}\.[a-z0-9_]+", config["default_entity_id"])
        assert config["device"]["identifiers"] and config["device"]["name"]
        assert config.get("device_class") in DEVICE_CLASSES.get(component, {config.get("device_class")})
        assert config.get("state_class") in STATE_CLASSES
        assert config.get("entity_category") in ENTITY_CATEGORIES
        assert config.get("mode") in (NUMBER_MODES if component == "number" else {None})
        [availability] = config["availability"]
        assert parse_topic(availability["topic"]).kind == "status"
        assert (availability["payload_available"], availability["payload_not_available"]) == ("online", "offline")
        for key in ("state_topic", "command_topic"):
            if key in config:
                assert parse_topic(config[key]).node in ("door-1", "door-2")
        json.dumps(config)  # serialisable as published
    angle = configs["homeassistant/number/maskwatch_hq_door-2_servo_angle/config"]
    assert (angle["min"], angle["max"]) == (-180, 180)
    assert configs["homeassistant/select/maskwatch_hq_door-1_servo_mode/config"]["options"] == [
        "sweep",
        "track",
        "hold",
        "off",
    ]


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("threshold", 0.4, {"value": 0.4}),
        ("servo_angle", 45.0, {"angle": 45.0}),
        ("servo_mode", "track", {"mode": "track"}),
    ],
)
def test_command_templates_render_contract_commands(key: str, value: Any, expected: dict[str, Any]) -> None:
    config = next(c for t, c in entity_configs("hq", "door-1").items() if t.endswith(f"_{key}/config"))
    name = parse_topic(config["command_topic"]).name
    first = parse(COMMANDS[name], _render(config["command_template"], value=value))
    second = parse(COMMANDS[name], _render(config["command_template"], value=value))
    assert first.model_dump(include=set(expected)) == expected
    assert first.request_id.startswith("ha-")
    assert first.request_id != second.request_id  # a new id per command (clock based)


def test_value_templates_read_contract_messages() -> None:
    configs = {
        t.split("/")[-2].removeprefix("maskwatch_hq_door-1_"): c for t, c in entity_configs("hq", "door-1").items()
    }
    state = json.loads(STATE.to_json())
    assert _render(configs["threshold"]["value_template"], value_json=state) == "0.35"
    assert _render(configs["servo_angle"]["value_template"], value_json=state) == "-30.0"
    assert _render(configs["servo_mode"]["value_template"], value_json=state) == "sweep"
    stats = json.loads(NodeStats(site="hq", node="door-1", ts=NOW, fps=29.5).to_json())
    assert _render(configs["fps"]["value_template"], value_json=stats) == "29.5"
    summary = NodeSummary(
        site="hq", node="door-1", ts=NOW, faces_in_view=1, no_mask_in_view=True, window_s=3600, faces=4, compliance=0.75
    )
    assert _render(configs["no_mask"]["value_template"], value_json=json.loads(summary.to_json())) == "ON"
    assert _render(configs["compliance"]["value_template"], value_json=json.loads(summary.to_json())) == "75.0"
    empty = summary.model_copy(update={"compliance": None, "no_mask_in_view": False})
    assert _render(configs["no_mask"]["value_template"], value_json=json.loads(empty.to_json())) == "OFF"
    assert _render(configs["compliance"]["value_template"], value_json=json.loads(empty.to_json())) == "None"
    event = Event(type="new", id="e1", site="hq", node="door-1", ts=NOW, label="no_mask", score=0.9, box=(1, 2, 3, 4))
    fired = json.loads(_render(configs["mask_event"]["value_template"], value_json=json.loads(event.to_json())))
    assert fired["event_type"] in configs["mask_event"]["event_types"]
    assert fired == {"event_type": "no_mask", "event_id": "e1", "score": 0.9}
    ended = event.model_copy(update={"type": "end"})
    assert _render(configs["mask_event"]["value_template"], value_json=json.loads(ended.to_json())) == ""


def test_schedule_sensors_read_the_state_with_and_without_a_schedule() -> None:
    configs = {
        t.split("/")[-2].removeprefix("maskwatch_hq_door-1_"): c for t, c in entity_configs("hq", "door-1").items()
    }
    keys = ("schedule_detect", "schedule_parked", "schedule_quiet", "schedule_next_change")

    def render(state: NodeState) -> list[str]:
        return [_render(configs[key]["value_template"], value_json=json.loads(state.to_json())) for key in keys]

    assert render(STATE) == ["ON", "OFF", "OFF", "None"]  # no schedule: detecting, open, not quiet
    closed = ScheduleState(detect=False, parked=True, quiet=True, next_change=datetime(2026, 3, 29, 6, tzinfo=UTC))
    assert render(STATE.model_copy(update={"schedule": closed})) == ["OFF", "ON", "ON", "2026-03-29T06:00:00Z"]
    steady = ScheduleState(detect=True, parked=False, quiet=False)
    assert render(STATE.model_copy(update={"schedule": steady})) == ["ON", "OFF", "OFF", "None"]


def test_summaries_follow_open_events_and_window() -> None:
    summaries = NodeSummaries(window_s=600, open_ttl_s=60)

    def event(kind: str, event_id: str, label: str, minutes_ago: float = 0) -> tuple[Event, datetime]:
        """An event stamped 1970 by a node without a clock, received ``minutes_ago``: the window is the hub's."""
        received = NOW - timedelta(minutes=minutes_ago)
        stamped = datetime(1970, 1, 1, tzinfo=UTC)
        return Event(
            type=kind, id=event_id, site="hq", node="n1", ts=stamped, label=label, score=0.9, box=(0, 0, 5, 5)
        ), received

    summaries.apply(*event("new", "old", "no_mask", minutes_ago=30))
    summaries.apply(*event("end", "old", "no_mask", minutes_ago=29))
    summaries.apply(*event("new", "a", "mask"))
    summaries.apply(*event("new", "b", "no_mask"))
    summaries.apply(*event("new", "b", "no_mask"))  # redelivered: counted once
    s = summaries.summary("hq", "n1", NOW)
    assert (s.faces_in_view, s.no_mask_in_view, s.faces, s.compliance) == (2, True, 2, 0.5)
    summaries.apply(*event("update", "b", "mask"))
    s = summaries.summary("hq", "n1", NOW)
    assert (s.no_mask_in_view, s.compliance) == (False, 1.0)
    summaries.apply(*event("end", "a", "mask"))
    summaries.apply(*event("end", "b", "mask"))
    assert summaries.summary("hq", "n1", NOW).faces_in_view == 0
    assert summaries.expire(NOW + timedelta(minutes=20)) == [("hq", "n1")]
    assert summaries.summary("hq", "n1", NOW + timedelta(minutes=20)).compliance is None


def _collector(broker_config: BrokerConfig, topic_filter: str, name: str) -> tuple[MqttClient, queue.Queue[Received]]:
    got: queue.Queue[Received] = queue.Queue()
    client = MqttClient(broker_config, name)
    client.subscribe(topic_filter, got.put)
    client.start()
    assert client.wait_connected(5)
    return client, got


def _drain(got: queue.Queue[Received], count: int, timeout: float = 10.0) -> list[Received]:
    return [got.get(timeout=timeout) for _ in range(count)]


def test_discovery_over_mqtt_and_resend_when_home_assistant_restarts(broker_config: BrokerConfig) -> None:
    site, node = "ha-test", "door-1"
    topics = NodeTopics(site, node)
    node_client = MqttClient(broker_config, "ha-test-node")
    node_client.start()
    assert node_client.wait_connected(5)
    node_client.publish(topics.status, b"online", qos=1, retain=True).wait_for_publish(5)
    node_client.publish(
        topics.state, STATE.model_copy(update={"site": site, "node": node}), qos=1, retain=True
    ).wait_for_publish(5)
    ha, configs = _collector(broker_config, "homeassistant/+/+/config", "ha-test-ha")
    summaries_client, summaries = _collector(broker_config, topics.summary, "ha-test-summaries")
    discovery = HaDiscovery(
        broker_config,
        HomeAssistantConfig(enabled=True, summary_every_s=60),
        sites=[site],
        client_id="ha-test-discovery",
    )
    discovery.start()
    try:
        first = {m.topic: json.loads(m.payload) for m in _drain(configs, len(entity_configs(site, node)))}
        assert set(first) == set(entity_configs(site, node))
        # the second batch (the state's model version seen) may follow; wait until quiet
        while True:
            try:
                configs.get(timeout=1.0)
            except queue.Empty:
                break
        ha.publish(HA_STATUS, b"online", qos=1).wait_for_publish(5)
        again = _drain(configs, len(entity_configs(site, node)))
        assert {m.topic for m in again} == set(first)
        assert json.loads(again[0].payload)["device"]["sw_version"] == "m@1"

        node_client.publish(topics.events, b'{"v": 1, "type": "new"', qos=1).wait_for_publish(5)  # bad JSON
        node_client.publish(topics.state, b'{"v": 1, "site": "x"}', qos=1).wait_for_publish(5)  # bad schema
        event = Event(
            type="new", id="ha-e1", site=site, node=node, ts=utc_now(), label="no_mask", score=0.9, box=(1, 2, 3, 4)
        )
        node_client.publish(topics.events, event, qos=1).wait_for_publish(5)
        summary = parse(NodeSummary, summaries.get(timeout=10).payload)
        while not summary.no_mask_in_view:  # earlier summaries (node seen, HA online) come first
            summary = parse(NodeSummary, summaries.get(timeout=10).payload)
        assert (summary.faces_in_view, summary.faces, summary.compliance) == (1, 1, 0.0)
        assert discovery.rejected == {"json": 1, "schema": 1}  # counted, and the valid event went on
        ha.publish(HA_STATUS, b"offline", qos=1).wait_for_publish(5)
        with pytest.raises(queue.Empty):
            configs.get(timeout=1.5)
    finally:
        discovery.stop()
        for client in (node_client, ha, summaries_client):
            client.stop()
