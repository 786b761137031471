"""Live bad input: thousands of random and adversarial payloads on every topic the hub subscribes to.

The hub (a real ``maskwatch hub`` process on the real Mosquitto) must stay up, count every rejection, and store
all the valid traffic interleaved with the garbage.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from fault_support import (
    ODD_NODE_LEVELS,
    EdgeProcess,
    EventTable,
    HubProcess,
    bad_payloads,
    postgres_database,
)

from bench.loadgen import LoadGen
from shared.config import BrokerConfig
from shared.errors import ContractError
from shared.messages import COMMANDS, CommandResponse, DesiredConfig, Event, NodeState, NodeStats, parse
from shared.mqtt import MqttClient
from shared.topics import NodeTopics, node_filter, site_command
from tests.polling import unique_site, wait_until

REASONS = {"json", "schema", "version", "oversize", "topic"}


def rejected_by_contract(model: type, payload: bytes) -> bool:
    try:
        parse(model, payload)
    except ContractError:
        return True
    return False


def garbage(site: str, node: str, valid_event: bytes, seed: int) -> list[tuple[str, bytes]]:
    """(topic, payload) pairs the hub must reject, over events, state, stats, status and snapshot topics."""
    rng = random.Random(seed)
    topics = NodeTopics(site, node)
    payloads = bad_payloads(rng, valid_event)
    out: list[tuple[str, bytes]] = []
    for payload in payloads:
        out += [(topics.events, payload)] if rejected_by_contract(Event, payload) else []
        out += [(topics.state, payload)] if rejected_by_contract(NodeState, payload) else []
        out += [(topics.stats, payload)] if rejected_by_contract(NodeStats, payload) else []
        out.append((topics.status, payload))
        out.append((topics.snapshot("e-1"), b"X" + payload[:1000]))  # not a JPEG
    out.append((topics.snapshot("e-2"), b"\xff\xd8" + b"\0" * 20_000))  # a "JPEG" over the configured bound
    # a valid event published on another node's topic, and on topics whose node level is not a valid id
    out.append((NodeTopics(site, "other").events, valid_event))
    for level in ODD_NODE_LEVELS:
        for kind in ("events", "state", "stats", "status"):
            out.append((f"maskwatch/{site}/{level}/{kind}", valid_event if kind == "events" else b"online"))
    rng.shuffle(out)
    return out


pg_url = pytest.fixture(name="pg_url")(postgres_database)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The hub's database: a SQLite file, and a fresh PostgreSQL database (skipped if none answers)."""
    return f"sqlite:///{tmp_path / 'hub.db'}" if request.param == "sqlite" else request.getfixturevalue("pg_url")


@pytest.mark.slow
def test_hub_survives_thousands_of_bad_payloads_and_stores_all_valid_ones(
    broker_config: BrokerConfig, tmp_path: Path, db_url: str
) -> None:
    site = unique_site()
    hub = HubProcess(
        broker_config, tmp_path, [site], db_url=db_url, settings={"ingest": {"max_snapshot_bytes": 10_000}}
    )
    gen = LoadGen(broker_config, site, 3, rate_per_node=100, connections=1)
    table = EventTable(hub.db_url)
    attacker = MqttClient(broker_config, f"attacker-{site}")
    with hub:
        gen.start()
        attacker.start()
        assert attacker.wait_connected(5)
        _, valid = gen.event(gen.node_topics[0])
        bad = garbage(site, gen.nodes[0], valid, seed=9)
        assert len(bad) > 2000
        stream = gen.run_in_background(count=600)
        for topic, payload in bad:
            attacker.publish(topic, payload, qos=1)
        stream.join(60)
        assert gen.wait_acked(30)

        assert wait_until(lambda: table.count(site) >= 600, 60), f"stored {table.count(site)} of 600"
        if not wait_until(lambda: hub.rejected_total() >= len(bad), 60):
            missing = Counter(bad) - Counter(table.rejected())
            raise AssertionError(
                f"rejected {hub.rejected_total()} of {len(bad)}; not rejected: {[(t, p[:100]) for t, p in missing]}"
            )
        assert hub.alive and hub.healthy()
        rows = table.rows(site)
        assert set(rows) == set(gen.ids)
        assert set(rows.values()) == {1}
        metrics = hub.metrics()
        reasons = {k.split('reason="')[1].rstrip('"}') for k in metrics if k.startswith("maskwatch_rejected_total")}
        assert reasons <= REASONS and {"json", "schema", "oversize", "topic"} <= reasons
        assert hub.rejected_total() == len(bad)
        stats = hub.get("/api/stats")
        assert sum(stats["rejected"].values()) == len(bad)
        online = {n["node"] for n in hub.get(f"/api/nodes?site={site}") if n["status"] == "online"}
        assert set(gen.nodes) <= online
    attacker.stop()
    gen.stop()
    table.close()


def command_garbage(site: str, node: str, seed: int) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """(commands that must each get one ``error`` answer, bad desired configs that must be counted)."""
    rng = random.Random(seed)
    topics = NodeTopics(site, node)
    commands: list[tuple[str, bytes]] = []
    for name, model in COMMANDS.items():
        valid = json.dumps({"v": 1, "request_id": f"fuzz-{name}", **VALID_ARGS[name]}).encode()
        bad = [p for p in bad_payloads(rng, valid) if rejected_by_contract(model, p)]
        commands += [(topics.cmd(name), p) for p in bad[:250]]
        commands += [(site_command(site, name), p) for p in bad[250:300]]
    for unknown in ("reboot", "shutdown", "x" * 32, "servo2"):
        commands.append((topics.cmd(unknown), json.dumps({"v": 1, "request_id": f"fuzz-{unknown}"}).encode()))
    desired = json.dumps({"v": 1, "threshold": 0.5}).encode()
    configs = [
        (topics.desired, p) for p in bad_payloads(rng, desired)[:300] if p and rejected_by_contract(DesiredConfig, p)
    ]
    rng.shuffle(commands)
    return commands, configs


VALID_ARGS = {
    "servo": {"mode": "hold"},
    "threshold": {"value": 0.5},
    "detect": {"enabled": True},
    "schedule": {"schedule": {"timezone": "UTC"}},
    "snapshot": {},
    "config": {},
    "model": {"model": "m", "sha256": "0" * 64, "size": 1},
}


@pytest.mark.slow
def test_node_answers_every_bad_command_with_an_error_and_stays_up(broker_config: BrokerConfig, tmp_path: Path) -> None:
    site, node = unique_site(), "door-9"
    topics = NodeTopics(site, node)
    answers: list[CommandResponse] = []
    stats: list[NodeStats] = []
    status: list[bytes] = []
    client = MqttClient(broker_config, f"fuzz-cmd-{site}")
    client.subscribe(node_filter("response", site), lambda m: answers.append(parse(CommandResponse, m.payload)))
    client.subscribe(topics.stats, lambda m: stats.append(parse(NodeStats, m.payload)))
    client.subscribe(topics.status, lambda m: status.append(m.payload))
    client.start()
    assert client.wait_connected(10)
    edge = EdgeProcess(broker_config, tmp_path, site, node, settings={"detect": False})
    edge.start()
    try:
        assert wait_until(lambda: status and status[-1] == b"online", 90), edge.log_tail()
        commands, configs = command_garbage(site, node, seed=4)
        assert len(commands) + len(configs) > 1000
        for topic, payload in [*commands, *configs]:
            client.publish(topic, payload, qos=1)
        assert wait_until(lambda: len(answers) >= len(commands), 120), (
            f"{len(answers)} answers to {len(commands)} bad commands\n{edge.log_tail()}"
        )
        assert {a.status for a in answers} == {"error"}
        assert all(a.error for a in answers)
        expected = len(commands) + len(configs)
        assert wait_until(lambda: stats and sum(stats[-1].rejected.values()) >= expected, 30), (
            f"node counted {sum(stats[-1].rejected.values()) if stats else None} of {expected}"
        )
        assert sum(stats[-1].rejected.values()) == expected
        client.publish(topics.cmd("config"), b'{"v": 1, "request_id": "still-there"}', qos=1)
        assert wait_until(lambda: any(a.request_id == "still-there" and a.status == "ok" for a in answers), 30)
        assert edge.alive
    finally:
        edge.stop()
        client.stop()
