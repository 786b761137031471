"""The REST API over a real SQLite file: filters, pagination, CSV, metrics, auth, rate limit, live stream."""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import sqlite3
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from hub_support import hub_config, make_event, publisher, running_hub
from sqlalchemy import func, select

from hub.api import HubServices, create_app
from hub.config import HubConfig, hash_token
from hub.storage.database import Store
from hub.storage.events import EventIn, EventLog, SnapshotIn
from hub.storage.nodes import NodeUpdate, Registry
from hub.storage.rejected import RejectedStore, RejectIn
from hub.storage.rows import EventRow
from shared.cli import main
from shared.config import BrokerConfig
from shared.messages import COMMANDS, SCHEMA_VERSION, utc_now
from shared.topics import NodeTopics
from shared.vocabulary import PROBABILITY_RANGE, SERVO_RANGE_DEG, Profile, ServoMode
from tests.polling import unique_site, wait_until

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette: "use httpx2" notice
    from fastapi.testclient import TestClient

TOKEN = "s3cret-token-for-tests"
START = utc_now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


def seed(store: Store, snapshot_dir: Path) -> EventLog:
    """60 events: nodes a/b/c, labels alternating, one minute apart from START; two rejections."""
    log = EventLog(store, snapshot_dir)
    items = [
        EventIn(
            make_event(
                "hq",
                "abc"[n % 3],
                n,
                label="no_mask" if n % 4 == 0 else "mask",
                ts=START + timedelta(minutes=n),
                snapshot=n == 5,
                face_score=0.97 if n == 5 else None,
            ),
            START + timedelta(minutes=n),  # received when seen: listings go by the time of receipt
        )
        for n in range(60)
    ]
    with store.transaction() as session:
        log.write(session, items)
        RejectedStore(store).add(
            session,
            [
                RejectIn("maskwatch/hq/a/events", "json", None, "bad", b"{", START),
                RejectIn("maskwatch/hq/a/events", "version", "v", "v=2", b"{}", START),
            ],
            100,
        )
        Registry(store).apply(
            session,
            [NodeUpdate("hq", "a", "status", START, online=True), NodeUpdate("hq", "b", "status", START, online=False)],
        )
    return log


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, Store]]:
    config = HubConfig(db_url=f"sqlite:///{tmp_path / 'api.db'}", snapshot_dir=tmp_path / "snaps")
    store = Store(config.db_url)
    store.migrate()
    log = seed(store, config.snapshot_dir)
    with store.transaction() as session:
        log.save_snapshots(session, [SnapshotIn("hq", "c", "hq-c-00005", b"\xff\xd8jpeg\xff\xd9", START)])
    app = create_app(HubServices(config=config, store=store, events=log, registry=Registry(store)))
    with TestClient(app) as client:
        yield client, store
    store.close()


def test_filters_and_pagination(api: tuple[TestClient, Store]) -> None:
    client, _store = api
    page = client.get("/api/events", params={"limit": 25}).json()
    assert page["total"] == 60 and len(page["items"]) == 25 and page["next_offset"] == 25
    ids = [e["id"] for e in page["items"]]
    assert ids[0] == "hq-c-00059"  # newest first
    rest = client.get("/api/events", params={"limit": 25, "offset": 50}).json()
    assert len(rest["items"]) == 10 and rest["next_offset"] is None
    no_mask_b = client.get("/api/events", params={"node": "b", "label": "no_mask"}).json()
    assert {e["id"] for e in no_mask_b["items"]} == {f"hq-b-{n:05d}" for n in range(60) if n % 3 == 1 and n % 4 == 0}
    window = client.get(
        "/api/events",
        params={
            "since": (START + timedelta(minutes=10)).isoformat(),
            "until": (START + timedelta(minutes=20)).isoformat(),
        },
    ).json()
    assert window["total"] == 10
    assert client.get("/api/events", params={"site": "elsewhere"}).json()["total"] == 0
    assert client.get("/api/events", params={"label": "maybe"}).status_code == 422
    assert client.get("/api/events", params={"since": "2026-01-01T00:00:00"}).status_code == 422  # no zone


def test_the_vocabulary_is_the_contract_s_own(api: tuple[TestClient, Store], tmp_path: Path) -> None:
    """The dashboard and scripts read the contract's words here instead of keeping copies."""
    client, _store = api
    body = client.get("/api/vocabulary").json()
    assert body["servo_modes"] == [mode.value for mode in ServoMode]
    assert body["servo_range_deg"] == list(SERVO_RANGE_DEG) and body["probability_range"] == list(PROBABILITY_RANGE)
    assert body["labels"] == ["mask", "no_mask"] and body["schema_version"] == SCHEMA_VERSION
    assert body["profiles"] == {profile.value: profile.default_point._asdict() for profile in Profile}
    assert body["commands"] == sorted(COMMANDS) and "servo" in body["commands"]
    assert _secured(tmp_path).get("/api/vocabulary").status_code == 401  # behind the token like the rest


def test_event_detail_snapshot_and_csv(api: tuple[TestClient, Store]) -> None:
    client, _store = api
    event = client.get("/api/events/hq-c-00005").json()
    assert event["snapshot_url"].endswith("/api/events/hq-c-00005/snapshot.jpg")
    assert event["raw_messages"][0]["id"] == "hq-c-00005"
    assert event["face_score"] == 0.97 and client.get("/api/events/hq-a-00000").json()["face_score"] is None
    snap = client.get("/api/events/hq-c-00005/snapshot.jpg")
    assert snap.status_code == 200 and snap.headers["content-type"] == "image/jpeg" and snap.content[:2] == b"\xff\xd8"
    assert client.get("/api/events/hq-a-00000/snapshot.jpg").status_code == 404
    assert client.get("/api/events/nope").status_code == 404
    text = client.get("/api/events.csv", params={"label": "no_mask"}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 15 and {r["label"] for r in rows} == {"no_mask"}
    assert rows[0]["id"] == "hq-c-00056"


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/events", {"offset": "9223372036854775808"}),
        ("/api/events", {"offset": "-1"}),
        ("/api/events", {"since": "0001-01-01T00:00:00+14:00"}),
        ("/api/events", {"until": "9999-12-31T23:59:59-14:00"}),
        ("/api/stats", {"since": "0001-01-01T00:00:00+14:00"}),
        ("/api/stats", {"until": "9999-12-31T23:59:59-14:00"}),
        ("/api/events.csv", {"since": "0001-01-01T00:00:00+14:00"}),
        ("/api/events.csv", {"until": "9999-12-31T23:59:59-14:00"}),
        ("/api/events.csv", {"since": "2026-01-01T00:00:00"}),
        ("/api/events", {"until": "0.5"}),  # a number is not a time (pydantic reads it as 1970 + 0.5 s)
        ("/api/stats", {"since": "1e9"}),
        ("/api/events", {"site": ""}),
        ("/api/events", {"node": "x" * 65}),
        ("/api/events.csv", {"site": "HQ"}),
        ("/api/nodes", {"site": "a/b"}),
        ("/api/alerts", {"site": "#"}),
        ("/api/events/" + "e" * 129, {}),
        ("/api/events/a%20b/snapshot.jpg", {}),
    ],
)
def test_out_of_range_parameters_get_a_json_4xx(
    api: tuple[TestClient, Store], path: str, params: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    client, _store = api
    response = client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/json") and response.json()["detail"]
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info]


def test_stats_and_metrics_match_the_database(api: tuple[TestClient, Store]) -> None:
    client, store = api
    stats = client.get("/api/stats", params={"since": START.isoformat()}).json()
    assert (stats["faces"], stats["mask"], stats["no_mask"], stats["compliance"]) == (60, 45, 15, 0.75)
    assert [h["mask"] + h["no_mask"] for h in stats["per_hour"]] == [60]
    per_node_hour = {(e["node"], e["hour"]): (e["mask"], e["no_mask"]) for e in stats["per_node_hour"]}
    assert {
        (e["node"], e["hour"]): (e["mask"], e["no_mask"])
        for e in stats["per_node"]
        for e in [{**e, "hour": stats["per_hour"][0]["hour"]}]
    } == per_node_hour  # one hour: the same counts
    assert stats["rejected"] == {"rejected.json": 1, "rejected.version": 1}
    metrics = client.get("/metrics").text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    with store.session() as session:
        for node, label, n in session.execute(
            select(EventRow.node, EventRow.label, func.count()).group_by(EventRow.node, EventRow.label)
        ):
            assert samples[f'maskwatch_events_stored{{site="hq",node="{node}",label="{label}"}}'] == n
            per_node = next(p for p in stats["per_node"] if p["node"] == node)
            assert per_node[label] == n
    assert samples['maskwatch_rejected_total{reason="json"}'] == 1
    assert samples['maskwatch_nodes{state="online"}'] == 1 and samples['maskwatch_nodes{state="offline"}'] == 1
    nodes = client.get("/api/nodes").json()
    assert [(n["node"], n["status"]) for n in nodes] == [("a", "online"), ("b", "offline")]


def _secured(tmp_path: Path, **auth: object) -> TestClient:
    config = HubConfig(
        db_url=f"sqlite:///{tmp_path / f'auth{len(list(tmp_path.iterdir()))}.db'}",
        auth={"tokens": [{"name": "ops", "sha256": hash_token(TOKEN)}], **auth},
    )
    store = Store(config.db_url)
    store.migrate()
    seed(store, tmp_path)
    return TestClient(
        create_app(HubServices(config=config, store=store, events=EventLog(store, tmp_path), registry=Registry(store)))
    )


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    return _secured(tmp_path_factory.mktemp("secured"))


@pytest.mark.parametrize(
    "path",
    [
        "/api/events",
        "/api/events.csv",
        "/api/events/hq-a-00000",
        "/api/nodes",
        "/api/stats",
        "/api/alerts",
        "/api/commands",
        "/api/rejected",
        "/api/stream",
        "/metrics",
        "/api/events/hq-c-00005/snapshot.jpg",
    ],
)
@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong-token", "Basic b3BzOnMzY3JldA==", "Bearer ", f"Bearer {TOKEN}x", f"bearer {TOKEN[:-1]}"],
)
def test_missing_or_wrong_token_gets_401_and_no_data(secured: TestClient, path: str, header: str | None) -> None:
    response = secured.get(path, headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.json() == {"detail": "authentication required"}
    assert "hq-" not in response.text


def test_wrong_token_cannot_command(secured: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = secured.post("/api/nodes/hq/a/commands/servo", json={"angle": 1}, headers=headers)
        assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"


def test_right_token_reads_and_public_endpoints(tmp_path: Path) -> None:
    client = _secured(tmp_path, public_metrics=True)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/events", headers=auth).json()["total"] == 60
    assert client.get("/healthz").status_code == 200  # public by default
    assert client.get("/metrics").status_code == 200  # made public
    closed = _secured(tmp_path, public_healthz=False)
    assert closed.get("/healthz").status_code == 401
    assert closed.get("/healthz", headers=auth).status_code == 200


def test_healthz_reports_an_unreachable_database(tmp_path: Path) -> None:
    config = HubConfig(db_url="postgresql+psycopg2://nobody@127.0.0.1:1/none")
    store = Store(config.db_url)
    client = TestClient(
        create_app(HubServices(config=config, store=store, events=EventLog(store, tmp_path), registry=Registry(store)))
    )
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json()["database"] is False


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/nodes/HQ/a/commands/threshold", {}),
        ("/api/nodes/hq/a,,b/commands/threshold", {}),
        ("/api/nodes/hq/" + ",".join(["n"] * 101) + "/commands/threshold", {}),
        ("/api/nodes/hq/a/commands/reboot", {}),
        ("/api/nodes/hq/a/commands/threshold", {"timeout_s": "nan"}),
        ("/api/nodes/hq/a/commands/threshold", {"timeout_s": "inf"}),
    ],
)
def test_bad_command_requests_get_a_json_422(api: tuple[TestClient, Store], path: str, params: dict[str, str]) -> None:
    client, _store = api
    response = client.post(path, params=params, json={"value": 0.5})
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_command_endpoint_is_rate_limited(tmp_path: Path) -> None:
    client = _secured(tmp_path, command_rate_per_min=3)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    codes = [
        client.post("/api/nodes/hq/a/commands/threshold", json={"value": 0.5}, headers=auth).status_code
        for _ in range(5)
    ]
    assert codes[:3] == [503, 503, 503]  # allowed through (this API has no MQTT link) ...
    assert codes[3:] == [429, 429]  # ... then limited
    limited = client.post("/api/nodes/hq/a/commands/threshold", json={"value": 0.5}, headers=auth)
    assert int(limited.headers["Retry-After"]) >= 1


def test_stream_and_cli_against_a_running_hub(
    broker_config: BrokerConfig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = unique_site()
    config = hub_config(broker_config, tmp_path, site, auth={"tokens": [{"name": "ops", "sha256": hash_token(TOKEN)}]})
    with running_hub(config) as hub:
        base = f"http://127.0.0.1:{hub.http_port}"
        with httpx.stream("GET", f"{base}/api/stream", params={"access_token": TOKEN}, timeout=10) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(lines) == ": connected"
            client = publisher(broker_config, "stream")
            client.publish(NodeTopics(site, "cam").events, make_event(site, "cam", 1, label="no_mask"), qos=1)
            seen: dict[str, dict[str, object]] = {}
            kind = ""
            for line in lines:
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    seen[kind] = json.loads(line[6:])
                if {"event", "alert"} <= set(seen):
                    break
            client.stop()
        assert seen["event"]["id"] == f"{site}-cam-00001" and seen["alert"]["kind"] == "no_mask"
        assert wait_until(
            lambda: httpx.get(f"{base}/api/events", headers={"Authorization": f"Bearer {TOKEN}"}).json()["total"] == 1
        )
        assert main(["events", "--api", base, "--token", TOKEN, "--json"]) == 0
        events = json.loads(capsys.readouterr().out)
        assert [e["id"] for e in events] == [f"{site}-cam-00001"]
        assert main(["events", "--api", base, "--token", TOKEN, "--all", "--format", "jsonl", "--site", site]) == 0
        assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == [f"{site}-cam-00001"]
        assert main(["events", "--api", base, "--token", "wrong"]) == 1
        assert main(["events", "--db", config.db_url, "--site", site, "--label", "no_mask", "--since", "1h"]) == 0
        assert f"{site}-cam-00001" in capsys.readouterr().out
        assert main(["nodes", "--db", config.db_url, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)[0]["node"] == "cam"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_their_assets_from_the_hub(api: tuple[TestClient, Store], page: str) -> None:
    """An offline site still gets working docs: no CDN URL in the page, every asset it names answers."""
    client, _store = api
    html = client.get(page)
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    assert not re.findall(r"https?://[^\s\"'<>]+", html.text)
    assets = re.findall(r"""(?:src|href)=["'](/docs-assets/[^"']+)["']""", html.text)
    assert assets and client.get("/openapi.json").status_code == 200
    for url in assets:
        answer = client.get(url)
        kind = "text/css" if url.endswith(".css") else "javascript"
        assert answer.status_code == 200 and kind in answer.headers["content-type"] and len(answer.content) > 100_000


def test_an_unexpected_error_is_one_logged_line_and_a_json_500(
    api: tuple[TestClient, Store], caplog: pytest.LogCaptureFixture
) -> None:
    """A fault no route expects (here the events table vanished under the hub) is a 500 with a JSON body and one
    error line, no traceback."""
    client, store = api
    with sqlite3.connect(store.engine.url.database) as db:
        db.execute("DROP TABLE events")
    with caplog.at_level(logging.ERROR, logger="hub.api"):
        response = client.get("/api/events")
    assert response.status_code == 500 and response.json()["detail"]
    [record] = [r for r in caplog.records if r.name == "hub.api"]
    assert "GET /api/events failed: OperationalError" in record.getMessage() and record.exc_info is None
