"""Remote commands from the CLI and the API to a real MQTT node (a responder on the real broker)."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from hub_support import NodeResponder, hub_config, make_event, publisher, running_hub
from sqlalchemy import select

from hub.storage.database import Store
from hub.storage.nodes import NodeUpdate, Registry
from hub.storage.rows import CommandRow, NodeRow
from shared.cli import main
from shared.config import BrokerConfig
from shared.messages import DesiredConfig, parse, utc_now
from shared.mqtt import MqttClient
from shared.topics import NodeTopics
from tests.polling import unique_site, wait_until


def cli(broker: BrokerConfig, *args: str) -> int:
    return main([args[0], "--broker", broker.address, *args[1:]])


def audit(store: Store) -> list[CommandRow]:
    with store.session() as session:
        return list(session.scalars(select(CommandRow).order_by(CommandRow.id)))


def test_cli_commands_answered_error_and_timeout_audited(
    broker_config: BrokerConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site)
    store = Store(config.db_url)
    store.migrate()
    with store.transaction() as session:  # the registry knows "door" (as a running hub would), not "absent"
        Registry(store).apply(session, [NodeUpdate(site, "door", "status", utc_now(), online=True)])
    db = ["--db", config.db_url]
    with NodeResponder(broker_config, site, "door") as node:
        assert cli(broker_config, "threshold", "--site", site, "--node", "door", "0.7", *db) == 0
        assert cli(broker_config, "servo", "--site", site, "--node", "door", "--mode", "sweep", *db) == 0
        assert cli(broker_config, "servo", "--site", site, "--node", "door", "--angle", "120", *db) == 1
        out = capsys.readouterr().out
        assert "ok:" in out and "error:" in out and "beyond" in out
        assert ("threshold", {"v": 1, "request_id": node.received[0][1]["request_id"], "value": 0.7}) == node.received[
            0
        ]
    assert (
        cli(broker_config, "servo", "--site", site, "--node", "absent", "--angle", "10", "--timeout", "0.5", *db)
        == 4  # never seen: refused
    )
    assert "unknown node" in capsys.readouterr().err
    assert (
        cli(
            broker_config,
            "servo",
            "--site",
            site,
            "--node",
            "absent",
            "--angle",
            "10",
            "--timeout",
            "0.5",
            "--force",
            *db,
        )
        == 3
    )
    assert "timeout: no answer" in capsys.readouterr().out
    rows = audit(store)
    assert [(r.node, r.name, r.status) for r in rows] == [
        ("door", "threshold", "ok"),
        ("door", "servo", "ok"),
        ("door", "servo", "error"),
        ("absent", "servo", "timeout"),
    ]
    assert rows[0].response is not None and rows[0].response["value"] == {"value": 0.7}
    assert rows[2].error and "beyond" in rows[2].error
    assert rows[3].answered_at is None and rows[3].source == "cli"
    # the desired config is kept per node (not what a node refused) and published retained
    with store.session() as session:
        door = session.get(NodeRow, (site, "door"))
        absent = session.get(NodeRow, (site, "absent"))
        assert door is not None and door.desired == {"threshold": 0.7, "servo_mode": "sweep"}
        assert absent is not None and absent.desired == {"servo_mode": "hold", "servo_angle": 10.0}
    inbox: queue.Queue[bytes] = queue.Queue()
    reader = MqttClient(broker_config, f"test-desired-{site}")
    reader.subscribe(NodeTopics(site, "door").desired, lambda m: inbox.put(m.payload))
    reader.start()
    try:
        desired = parse(DesiredConfig, inbox.get(timeout=5))
        assert (desired.threshold, desired.servo_mode, desired.servo_angle) == (0.7, "sweep", None)
    finally:
        reader.stop()
    store.close()


def test_cli_without_db_and_json_output(broker_config: BrokerConfig, capsys: pytest.CaptureFixture[str]) -> None:
    site = unique_site()
    with NodeResponder(broker_config, site, "door"):
        assert cli(broker_config, "threshold", "--site", site, "--node", "door", "0.4", "--json") == 0
        answers = json.loads(capsys.readouterr().out)
        assert answers[0]["status"] == "ok" and answers[0]["value"] == {"value": 0.4}
        # to 'all' without a registry: every answer within the timeout counts
        assert cli(broker_config, "threshold", "--site", site, "--node", "all", "0.5", "--timeout", "1", "--json") == 0
        assert [(a["node"], a["status"]) for a in json.loads(capsys.readouterr().out)] == [("door", "ok")]
    assert cli(broker_config, "threshold", "--site", site, "--node", "door", "1.5") == 2  # rejected locally


def test_api_commands_to_one_node_and_to_a_site(broker_config: BrokerConfig, tmp_path: Path) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site)
    with NodeResponder(broker_config, site, "a"), NodeResponder(broker_config, site, "b"), running_hub(config) as hub:
        base = f"http://127.0.0.1:{hub.http_port}"
        store = Store(config.db_url)
        assert wait_until(lambda: len([r for r in _nodes(store) if r.online]) == 2)
        ok = httpx.post(f"{base}/api/nodes/{site}/a/commands/servo", json={"angle": 15}, timeout=10)
        assert ok.status_code == 200 and ok.json()["results"][0]["status"] == "ok"
        error = httpx.post(f"{base}/api/nodes/{site}/a/commands/servo", json={"angle": 150}, timeout=10)
        assert error.status_code == 502 and error.json()["results"][0]["status"] == "error"
        listed = httpx.post(f"{base}/api/nodes/{site}/a,b/commands/snapshot", json={}, timeout=10)
        assert listed.status_code == 200 and [r["node"] for r in listed.json()["results"]] == ["a", "b"]
        everyone = httpx.post(f"{base}/api/nodes/{site}/all/commands/detect", json={"enabled": False}, timeout=10)
        assert everyone.status_code == 200
        assert sorted(r["node"] for r in everyone.json()["results"]) == ["a", "b"]
        absent = httpx.post(
            f"{base}/api/nodes/{site}/zzz/commands/snapshot?timeout_s=0.3&force=true", json={}, timeout=10
        )
        assert absent.status_code == 504
        bad = httpx.post(f"{base}/api/nodes/{site}/a/commands/threshold", json={"value": 7}, timeout=10)
        assert bad.status_code == 422
        for params in ({"angle": 1e308}, {"angle": -181}, {"mode": "sweep", "sweep_max_deg": 1000}):
            refused = httpx.post(f"{base}/api/nodes/{site}/a/commands/servo", json=params, timeout=10)
            assert refused.status_code == 422 and "180" in refused.json()["detail"], refused.text
        rows = audit(store)
        assert [(r.node, r.name, r.status) for r in rows] == [
            ("a", "servo", "ok"),
            ("a", "servo", "error"),
            ("a", "snapshot", "ok"),
            ("b", "snapshot", "ok"),
            ("all", "detect", "ok"),
            ("zzz", "snapshot", "timeout"),
        ]
        assert {r.source for r in rows} == {"api:anonymous"}
        assert {a["node"] for a in rows[4].response["answers"]} == {"a", "b"}  # type: ignore[index]
        audit_api = httpx.get(f"{base}/api/commands", timeout=10).json()
        assert [c["status"] for c in audit_api] == ["timeout", "ok", "ok", "ok", "error", "ok"]
        store.close()


def _nodes(store: Store) -> list[NodeRow]:
    with store.session() as session:
        return list(session.scalars(select(NodeRow)))


def test_alerts_command_follows_the_site(
    broker_config: BrokerConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site)
    codes: list[int] = []
    follower = threading.Thread(
        target=lambda: codes.append(
            cli(broker_config, "alerts", "--site", site, "--count", "1", "--timeout", "20", "--json")
        )
    )
    with running_hub(config):
        follower.start()
        time.sleep(1.0)  # the follower subscribes
        client = publisher(broker_config, "cam")
        client.publish(NodeTopics(site, "cam").events, make_event(site, "cam", 7, label="no_mask", score=0.91), qos=1)
        follower.join(30)
        client.stop()
    assert codes == [0]
    alert = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (alert["kind"], alert["node"], alert["event_id"], alert["score"]) == (
        "no_mask",
        "cam",
        f"{site}-cam-00007",
        0.91,
    )
    assert cli(broker_config, "alerts", "--site", site, "--count", "1", "--timeout", "0.5") == 3


def test_schedule_from_the_cli_and_the_api_is_sent_and_kept_as_desired(
    broker_config: BrokerConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site)
    store = Store(config.db_url)
    store.migrate()
    schedule = {
        "timezone": "Europe/Berlin",
        "open": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"}],
        "quiet": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start": "22:00", "end": "06:00"}],
        "park_deg": -30.0,
    }
    args = ["--site", site, "--node", "door", "--timezone", "Europe/Berlin", "--db", config.db_url, "--force"]
    windows = ["--open", "mon-fri 08:00-18:00", "--quiet", "22:00-06:00", "--park-deg", "-30"]
    with NodeResponder(broker_config, site, "door") as node:
        assert cli(broker_config, "schedule", *args, *windows) == 0
        assert node.received == [
            ("schedule", {"v": 1, "request_id": node.received[0][1]["request_id"], "schedule": schedule})
        ]
        with pytest.raises(SystemExit) as bad_window:  # refused by the argument parser, nothing sent
            cli(broker_config, "schedule", *args, "--open", "mon-fri 08:00")
        assert bad_window.value.code == 2 and "HH:MM-HH:MM" in capsys.readouterr().err
        with pytest.raises(SystemExit) as bad_zone:
            cli(broker_config, "schedule", *args[:4], "--timezone", "Mars/Olympus")
        assert bad_zone.value.code == 2 and "unknown IANA time zone" in capsys.readouterr().err
        assert len(node.received) == 1
    with store.session() as session:
        door = session.get(NodeRow, (site, "door"))
        assert door is not None and door.desired == {"schedule": schedule}
    with NodeResponder(broker_config, site, "a"), running_hub(config) as hub:
        base = f"http://127.0.0.1:{hub.http_port}"
        ok = httpx.post(
            f"{base}/api/nodes/{site}/a/commands/schedule?force=true", json={"schedule": schedule}, timeout=10
        )
        assert ok.status_code == 200 and ok.json()["results"][0]["value"] == {"schedule": schedule}
        bad = {"schedule": {**schedule, "park_deg": True}}
        refused = httpx.post(f"{base}/api/nodes/{site}/a/commands/schedule?force=true", json=bad, timeout=10)
        assert refused.status_code == 422 and "park_deg" in refused.json()["detail"]
    store.close()


def retained(broker: BrokerConfig, topic: str, wait_s: float = 1.0) -> list[bytes]:
    """The retained message on ``topic``, as a fresh subscriber sees it (``mosquitto_sub -C 1 -W``-style)."""
    inbox: queue.Queue[bytes] = queue.Queue()
    reader = MqttClient(broker, f"test-retained-{uuid.uuid4().hex[:8]}")
    reader.subscribe(topic, lambda m: inbox.put(m.payload))
    reader.start()
    try:
        assert reader.wait_connected(5)
        deadline = time.monotonic() + wait_s
        got: list[bytes] = []
        while time.monotonic() < deadline:
            try:
                got.append(inbox.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                break
        return got
    finally:
        reader.stop()


def test_unknown_nodes_are_refused_unless_forced_and_can_be_forgotten(
    broker_config: BrokerConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site)
    ghost = NodeTopics(site, "ghost")
    with NodeResponder(broker_config, site, "a") as node_a, running_hub(config) as hub:
        base = f"http://127.0.0.1:{hub.http_port}"
        store = Store(config.db_url)
        assert wait_until(lambda: [r.node for r in _nodes(store)] == ["a"])
        # refused: 404, nothing sent (not even to the known node of the list), no row, no retained desired
        for target in ("ghost", "a,ghost"):
            refused = httpx.post(
                f"{base}/api/nodes/{site}/{target}/commands/threshold", json={"value": 0.6}, timeout=10
            )
            assert refused.status_code == 404 and "ghost" in refused.json()["detail"]
        assert cli(broker_config, "threshold", "--site", site, "--node", "ghost", "0.6", "--db", config.db_url) == 4
        assert f"unknown node {site}/ghost" in capsys.readouterr().err
        assert [r.node for r in _nodes(store)] == ["a"] and node_a.received == []
        assert retained(broker_config, ghost.desired) == []
        # forced: it goes (no one answers), and the desired config waits for the node, retained
        forced = httpx.post(
            f"{base}/api/nodes/{site}/ghost/commands/threshold?force=true&timeout_s=0.3",
            json={"value": 0.6},
            timeout=10,
        )
        assert forced.status_code == 504
        assert [r.node for r in _nodes(store)] == ["a", "ghost"]
        assert [parse(DesiredConfig, p).threshold for p in retained(broker_config, ghost.desired)] == [0.6]
        # forgotten through the API: row gone, retained desired gone; a second time: 404
        gone = httpx.delete(f"{base}/api/nodes/{site}/ghost", timeout=10)
        assert gone.status_code == 200 and ghost.desired in gone.json()["cleared"]
        assert [r.node for r in _nodes(store)] == ["a"]
        assert retained(broker_config, ghost.desired) == []
        assert httpx.delete(f"{base}/api/nodes/{site}/ghost", timeout=10).status_code == 404
        # forgotten through the CLI (database and broker): the known node's desired goes too
        assert cli(broker_config, "threshold", "--site", site, "--node", "a", "0.4", "--db", config.db_url) == 0
        assert retained(broker_config, NodeTopics(site, "a").desired)
        assert main(["nodes", "--forget", f"{site}/a", "--db", config.db_url, "--broker", broker_config.address]) == 0
        assert "forgot" in capsys.readouterr().out
        assert [r.node for r in _nodes(store)] == [] and retained(broker_config, NodeTopics(site, "a").desired) == []
        assert main(["nodes", "--forget", f"{site}/a", "--db", config.db_url, "--broker", broker_config.address]) == 1
        store.close()
