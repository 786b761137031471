"""Real ``maskwatch edge`` and ``maskwatch hub`` processes against the shipped broker config.

They run the way the deployment files run them: the Raspberry Pi ``edge.yaml`` and the
``hub.yaml`` examples, logins from ``make-users`` in the environment (as systemd's
EnvironmentFile= gives them), TLS with the site CA from ``make-certs``; and the
docker-compose node command through the image's entrypoint script.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from deploy_site import ALERTS, HUB, REPO, ShippedSite, make_certs

from devsite.broker import free_port
from shared.messages import Alert, Event, parse, utc_now
from shared.mqtt import MqttClient, Received
from shared.topics import NodeTopics, alerts, node_filter

pytestmark = pytest.mark.slow

PI = REPO / "deploy" / "pi"
#: The built-in scene for 2 s of virtual time, the servo held on its masked face at +60 degrees.
SCENE = [
    "--source",
    "scene:builtin",
    "--set",
    "scene.duration_s=2",
    "--set",
    "scene.realtime=false",
    "--set",
    "servo.mode=hold",
    "--set",
    "servo.start_deg=60",
]


@pytest.fixture(scope="module")
def site() -> Iterator[ShippedSite]:
    shipped = ShippedSite(("hq/door-1", "demo/node-1")).start()
    yield shipped
    shipped.close()


def login_env(site: ShippedSite, username: str | None, **extra: str) -> dict[str, str]:
    """The process environment: ours without MASKWATCH_*, plus the login file's variables and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASKWATCH_")}
    env.update(site.credentials(username) if username else {})
    env.update(extra)
    return env


def edge(site: ShippedSite, tmp_path: Path, ca: Path, *, drain_s: int = 30) -> subprocess.CompletedProcess[str]:
    """``maskwatch edge --once`` with the Pi's edge.yaml, over TLS, on the built-in scene."""
    return subprocess.run(
        [
            "maskwatch",
            "edge",
            "--config",
            str(PI / "edge.yaml"),
            "--broker",
            f"localhost:{site.tls_port}",
            "--site",
            "hq",
            "--node",
            "door-1",
            "--once",
            "--outbox",
            str(tmp_path / "outbox.sqlite"),
            *SCENE,
            "--set",
            "pin_factory=mock",
            "--set",
            f"broker.tls.ca_certs={ca}",
            "--set",
            f"outbox.drain_timeout_s={drain_s}",
            "--set",
            "delivery=broker",
        ],
        env=login_env(site, "hq/door-1"),
        capture_output=True,
        text=True,
        timeout=180,
    )


def health(port: int) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds, or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def hub_events(port: int) -> list[dict[str, object]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/events?site=hq&node=door-1", timeout=5) as response:
        body = json.loads(response.read())
    return body["items"]


def test_edge_and_hub_processes_talk_over_tls_with_the_shipped_configs(site: ShippedSite, tmp_path: Path) -> None:
    port = free_port()
    hub = subprocess.Popen(
        [
            "maskwatch",
            "hub",
            "--config",
            str(PI / "hub.yaml"),
            "--broker",
            f"localhost:{site.tls_port}",
            "--db",
            f"sqlite:///{tmp_path / 'hub.db'}",
            "--http",
            f"127.0.0.1:{port}",
            "--set",
            f"snapshot_dir={tmp_path / 'snapshots'}",
        ],
        env=login_env(site, HUB, MASKWATCH_BROKER__TLS__CA_CERTS=str(site.ca)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait(lambda: (health(port) or {}).get("mqtt") is True or hub.poll() is not None, 60, "the hub's MQTT link")
        assert hub.poll() is None, hub.stderr.read() if hub.stderr else ""
        node = edge(site, tmp_path, site.ca)
        assert node.returncode == 0, node.stderr[-3000:]
        wait(lambda: bool(hub_events(port)), 30, "events in the hub's database")
        events = hub_events(port)
        assert {e["site"] for e in events} == {"hq"} and {e["node"] for e in events} == {"door-1"}
    finally:
        hub.terminate()
        assert hub.wait(30) == 0


def test_processes_refuse_a_broker_certificate_from_another_ca(site: ShippedSite, tmp_path: Path) -> None:
    other_ca = make_certs(tmp_path / "other", "localhost", "127.0.0.1")
    node = edge(site, tmp_path, other_ca, drain_s=1)
    assert node.returncode != 0 and "not acknowledged" in node.stderr  # the events wait in the outbox
    assert "CERTIFICATE_VERIFY_FAILED" in node.stderr and "shared.mqtt: connected to" not in node.stderr
    port = free_port()
    hub = subprocess.Popen(
        [
            "maskwatch",
            "hub",
            "--broker",
            f"localhost:{site.tls_port}",
            "--db",
            f"sqlite:///{tmp_path / 'hub.db'}",
            "--http",
            f"127.0.0.1:{port}",
        ],
        env=login_env(site, HUB, MASKWATCH_BROKER__TLS__CA_CERTS=str(other_ca)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, hub.kill)  # ends the read below if the line never comes
    watchdog.start()
    try:
        assert hub.stderr is not None
        refusal = next((line for line in hub.stderr if "cannot reach broker" in line), "")
        assert "CERTIFICATE_VERIFY_FAILED" in refusal, "the hub did not report the refused certificate"
        assert (health(port) or {"mqtt": False}).get("mqtt") is not True
    finally:
        watchdog.cancel()
        hub.terminate()
        hub.wait(30)


def test_compose_node_command_runs_through_the_image_entrypoint(site: ShippedSite, tmp_path: Path) -> None:
    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["node-1"]
    credentials = Path(service["environment"]["CREDENTIALS_FILE"]).name
    # what differs from the container: the broker's address and the state folder
    command = [
        word.replace("mosquitto:1883", site.broker.address).replace("/var/lib/maskwatch", str(tmp_path))
        for word in service["command"]
    ]
    topics = NodeTopics("demo", "node-1")
    hub = MqttClient(site.login(HUB), "test-hub")
    got: list[Received] = []
    hub.subscribe(node_filter("events", "demo"), got.append)
    hub.start()
    try:
        assert hub.wait_connected(5)
        # no login in the environment: the entrypoint reads it from the make-users file
        env = login_env(site, None, CREDENTIALS_FILE=str(site.secrets / "credentials" / credentials))
        proc = subprocess.run(
            [
                "sh",
                str(REPO / "deploy" / "docker" / "entrypoint.sh"),
                *command,
                "--once",
                "--set",
                "delivery=broker",
                *SCENE[2:],
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        wait(lambda: bool(got), 10, "events from demo/node-1")
        assert all(m.topic == topics.events and parse(Event, m.payload).node == "node-1" for m in got)
    finally:
        hub.stop()
    missing = subprocess.run(
        ["sh", str(REPO / "deploy" / "docker" / "entrypoint.sh"), "--version"],
        env={**os.environ, "CREDENTIALS_FILE": str(tmp_path / "absent.env")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "run make-users first" in missing.stderr


def test_compose_hub_serves_its_api_only_with_the_generated_token(site: ShippedSite, tmp_path: Path) -> None:
    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["hub"]
    credentials = tmp_path / "credentials"
    shutil.copytree(site.secrets / "credentials", credentials)
    subprocess.run(
        ["sh", str(REPO / "deploy" / "docker" / "make-api-token"), str(credentials)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    token = (credentials / "api-token").read_text().strip()
    port = free_port()
    command = [
        word.replace("mosquitto:1883", site.broker.address)
        .replace("/var/lib/maskwatch", str(tmp_path))
        .replace("0.0.0.0:8080", f"127.0.0.1:{port}")
        for word in service["command"]
    ]
    login = credentials / Path(service["environment"]["CREDENTIALS_FILE"]).name
    env = login_env(
        site,
        None,
        CREDENTIALS_FILE=str(login),
        **{
            k: v.replace("/var/lib/maskwatch", str(tmp_path))
            for k, v in service["environment"].items()
            if k.startswith("MASKWATCH_")
        },
    )
    hub = subprocess.Popen(
        ["sh", str(REPO / "deploy" / "docker" / "entrypoint.sh"), *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait(lambda: (health(port) or {}).get("mqtt") is True or hub.poll() is not None, 60, "the hub's MQTT link")
        assert hub.poll() is None, hub.stderr.read() if hub.stderr else ""

        def status(path: str, bearer: str | None) -> int:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
            if bearer:
                request.add_header("Authorization", f"Bearer {bearer}")
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code

        for path in ("/api/events", "/api/nodes", "/metrics"):
            assert status(path, None) == 401 and status(path, token[::-1]) == 401, path
            assert status(path, token) == 200, path
    finally:
        hub.terminate()
        assert hub.wait(30) == 0


def test_alerts_command_follows_alerts_with_the_alerts_reader_login(site: ShippedSite) -> None:
    reader = subprocess.Popen(
        [
            "maskwatch",
            "alerts",
            "--broker",
            site.broker.address,
            "--site",
            "hq",
            "--json",
            "--count",
            "2",
            "--timeout",
            "60",
        ],
        env=login_env(site, ALERTS),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    hub = MqttClient(site.login(HUB), "test-hub")
    hub.start()
    try:
        assert hub.wait_connected(5)
        sent = 0
        while reader.poll() is None and sent < 200:  # alerts are not retained: repeat until it has two
            alert = Alert(kind="no_mask", site="hq", node="door-1", ts=utc_now(), event_id=f"ev-{sent}", score=0.9)
            hub.publish(alerts("hq"), alert, qos=1).wait_for_publish(5)
            sent += 1
            time.sleep(0.1)
        out, err = reader.communicate(timeout=30)
    finally:
        hub.stop()
    assert reader.returncode == 0, err
    got = [parse(Alert, line.encode()) for line in out.splitlines()]
    assert len(got) == 2 and all(a.site == "hq" and a.kind == "no_mask" for a in got)
