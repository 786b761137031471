"""Helpers for the hub tests: unique sites, event factories, a running hub, and a real MQTT node responder."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from devsite.broker import free_port
from hub.app import HubApp
from hub.config import HubConfig
from shared.config import BrokerConfig
from shared.errors import ContractError
from shared.messages import COMMANDS, CommandResponse, Event, parse, utc_now
from shared.mqtt import MqttClient, Received, Will
from shared.topics import NodeTopics, alerts, parse_topic


def make_event(
    site: str,
    node: str,
    n: int,
    *,
    kind: str = "new",
    label: str = "mask",
    score: float = 0.9,
    ts: datetime | None = None,
    snapshot: bool = False,
    face_score: float | None = None,
) -> Event:
    return Event(
        type=kind,
        id=f"{site}-{node}-{n:05d}",
        site=site,
        node=node,
        ts=ts or utc_now(),
        label=label,
        score=score,
        box=(10, 20, 64, 64),
        angle=0.0,
        snapshot=snapshot,
        face_score=face_score,
    )


def hub_config(broker: BrokerConfig, tmp_path: Path, site: str, **overrides: Any) -> HubConfig:
    """A config for one test: its own site, DB file, share group, session and HTTP port."""
    data: dict[str, Any] = {
        "broker": broker.model_dump(),
        "db_url": f"sqlite:///{tmp_path / 'hub.db'}",
        "hub_id": f"h{site}",
        "sites": [site],
        "snapshot_dir": str(tmp_path / "snapshots"),
        "command_timeout_s": 2.0,
        "http": {"host": "127.0.0.1", "port": free_port()},
        "ingest": {"batch_size": 200, "batch_ms": 20, "share_group": f"g{site}"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return HubConfig.model_validate(data)


@contextmanager
def running_hub(config: HubConfig) -> Iterator[HubApp]:
    app = HubApp(config)
    app.start()
    try:
        yield app
    finally:
        app.stop()


@contextmanager
def alert_watcher(broker: BrokerConfig, site: str) -> Iterator[list[Received]]:
    """Collects every alert published for ``site`` while the context is open."""
    inbox: list[Received] = []
    watcher = MqttClient(broker, f"test-alerts-{site}")
    watcher.subscribe(alerts(site), inbox.append)
    watcher.start()
    assert watcher.wait_connected(5)
    try:
        yield inbox
    finally:
        watcher.stop()


def publisher(broker: BrokerConfig, name: str) -> MqttClient:
    client = MqttClient(broker, f"test-pub-{name}-{uuid.uuid4().hex[:6]}")
    client.start()
    assert client.wait_connected(5)
    return client


class NodeResponder:
    """A small real node on the real broker: answers every command per the contract.

    ``servo`` with an angle above ``max_deg`` is answered with an ``error``; everything else ``ok``.
    Commands received are kept in :attr:`received`.
    """

    def __init__(self, broker: BrokerConfig, site: str, node: str, *, max_deg: float = 90.0) -> None:
        self.topics = NodeTopics(site, node)
        self.max_deg = max_deg
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.client = MqttClient(
            broker,
            f"test-node-{site}-{node}",
            will=Will(self.topics.status, b"offline"),
            on_connect=lambda: self.client.publish(self.topics.status, b"online", qos=1, retain=True),
        )
        self.client.subscribe(self.topics.cmd_filter, self._on_command)
        self.client.subscribe(self.topics.site_cmd_filter, self._on_command)

    def __enter__(self) -> NodeResponder:
        self.client.start()
        assert self.client.wait_connected(5)
        time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.stop()

    def _on_command(self, message: Received) -> None:
        name = parse_topic(message.topic).name or ""
        site, node = self.topics.site, self.topics.node
        try:
            command = parse(COMMANDS[name], message.payload)
        except (ContractError, KeyError) as exc:
            answer = CommandResponse(
                request_id=None, status="error", site=site, node=node, ts=utc_now(), error=str(exc)
            )
        else:
            data = command.model_dump(mode="json", exclude_none=True)
            self.received.append((name, data))
            angle = data.get("angle")
            if name == "servo" and angle is not None and abs(angle) > self.max_deg:
                answer = CommandResponse(
                    request_id=command.request_id,
                    status="error",
                    site=site,
                    node=node,
                    ts=utc_now(),
                    error=f"angle {angle} beyond the +-{self.max_deg} limit",
                )
            else:
                answer = CommandResponse(
                    request_id=command.request_id,
                    status="ok",
                    site=site,
                    node=node,
                    ts=utc_now(),
                    value={k: v for k, v in data.items() if k not in ("v", "request_id")},
                )
        self.client.publish(self.topics.response(name), answer, qos=1)


def minutes_ago(minutes: float) -> datetime:
    return utc_now() - timedelta(minutes=minutes)
