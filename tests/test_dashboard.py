"""The dashboard in headless Chromium against a running demo site (broker, hub, 3 simulated node processes).

Screenshots go to a temporary folder, or to ``$DASHBOARD_SCREENSHOTS`` (``docs/screenshots`` refreshes the
README's pictures).
"""

from __future__ import annotations

import csv
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from devsite.broker import free_port
from devsite.demo import DemoSite
from hub.app import HubApp
from hub.config import ApiToken, AuthConfig, HttpConfig, HubConfig, hash_token
from shared.config import BrokerConfig
from shared.messages import Event, NodeState, NodeStats, ServoState, utc_now
from shared.mqtt import MqttClient
from shared.topics import NodeTopics
from shared.vocabulary import ServoMode
from tests.polling import unique_site

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
NODES = 3
MISSING = "\u2013"  # the dashboard's placeholder for a value not known yet
pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed (/usr/bin/chromium): "
        "bash tests/run installs it as root, or apt-get install chromium",
    ),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package (dev extra) is missing")


def _call(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.load(response)


def _until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSite]:
    """One demo site for the module: every node online and at least one event stored."""
    site = DemoSite(nodes=NODES, http=("127.0.0.1", 0), state_dir=tmp_path_factory.mktemp("demo"))
    site.start()

    def all_online() -> bool:
        ready = [n for n in _call(f"{site.url}api/nodes") if n["status"] == "online" and n["state"]]
        return len(ready) == NODES

    try:
        try:
            _until(all_online, 90, "every node online")
            _until(lambda: _call(f"{site.url}api/events?limit=1")["total"], 60, "a first event")
        except BaseException:
            for log in sorted((site.state_dir / "logs").glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-3000:]}")
            print(_call(f"{site.url}api/nodes"))
            raise
        yield site
    finally:
        site.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    yield tab
    context.close()
    assert errors == [], f"JavaScript errors: {errors}"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("DASHBOARD_SCREENSHOTS")
    folder = (
        (REPO / chosen)
        if chosen and not Path(chosen).is_absolute()
        else Path(chosen or tmp_path_factory.mktemp("shots"))
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_live_page_shows_every_node_online(demo: DemoSite, page: Any, shots: Path) -> None:
    page.goto(demo.url)
    cards = page.locator('#nodes article[data-status="online"]')
    sync_api.expect(cards).to_have_count(NODES, timeout=15_000)
    for index in range(1, NODES + 1):
        card = page.locator(f'#nodes article[data-node="demo/demo-{index}"]')
        sync_api.expect(card.locator('[data-field="mode"]')).not_to_have_text(MISSING)
        sync_api.expect(card.locator('[data-field="fps"]')).not_to_have_text(MISSING, timeout=20_000)
        sync_api.expect(card.locator('[data-field="model"]')).to_contain_text("mask_classifier_int8@")
        sync_api.expect(card.locator('[data-field="schedule"]')).to_have_text("none")  # demo nodes keep no hours
    sync_api.expect(page.locator("#link")).to_have_attribute("data-state", "live")
    sync_api.expect(page.locator("#feed li").first).to_be_visible()
    page.screenshot(path=str(shots / "live.png"), full_page=True)


def test_events_arrive_live_without_reload(demo: DemoSite, page: Any) -> None:
    page.goto(demo.url)
    sync_api.expect(page.locator("#link")).to_have_attribute("data-state", "live", timeout=10_000)
    mine = page.locator('#feed li[data-node="demo/demo-3"]')  # the other nodes' events may come too
    known = set(mine.evaluate_all("items => items.map(li => li.dataset.id)"))
    command = f"{demo.url}api/nodes/demo/demo-3/commands/servo"
    # look away (no face within the 60-degree view at 0), then at the unmasked face placed at -60 degrees
    assert _call(command, {"angle": 0})["results"][0]["status"] == "ok"
    time.sleep(3)
    assert _call(command, {"angle": -60})["results"][0]["status"] == "ok"
    _until(
        lambda: set(mine.evaluate_all("items => items.map(li => li.dataset.id)")) - known,
        40,
        "a new event of demo-3 in the live feed",
    )
    new_ids = set(mine.evaluate_all("items => items.map(li => li.dataset.id)")) - known
    item = page.locator(f'#feed li[data-id="{sorted(new_ids)[0]}"]')
    label = item.get_attribute("data-label")
    expected_text = {"mask": "wearing mask", "no_mask": "not wearing mask"}[label]
    sync_api.expect(item.locator(".badge")).to_have_text(expected_text)
    colour = item.locator(".badge").evaluate("b => getComputedStyle(b).backgroundColor")
    assert colour == {"mask": "rgb(30, 111, 217)", "no_mask": "rgb(217, 48, 37)"}[label]  # blue / red
    stored = _call(f"{demo.url}api/events/{sorted(new_ids)[0]}")
    assert stored["node"] == "demo-3"


def test_servo_slider_moves_the_node_and_the_answer_comes_back(demo: DemoSite, page: Any, shots: Path) -> None:
    page.goto(f"{demo.url}control.html")
    card = page.locator('#controls article[data-node="demo/demo-1"]')
    sync_api.expect(card).to_have_attribute("data-status", "online", timeout=15_000)
    card.locator('input[name="angle"]').fill("-40")  # fires input and change, like a released slider
    answer = card.locator(".answer")
    sync_api.expect(answer).to_have_attribute("data-status", "ok", timeout=15_000)
    sync_api.expect(answer).to_contain_text("angle -40°")
    # the node's retained state (through the hub's registry and stream) shows the new angle and mode
    sync_api.expect(card.locator('[data-field="angle"]')).to_have_text("-40°", timeout=15_000)
    sync_api.expect(card.locator('[data-field="mode"]')).to_have_text("hold")
    state = next(n["state"] for n in _call(f"{demo.url}api/nodes") if n["node"] == "demo-1")
    assert state["servo"]["angle"] == -40 and state["servo"]["mode"] == "hold"

    card.locator('input[name="threshold"]').fill("1.5")  # out of range: refused, and said so
    card.get_by_role("button", name="Set").click()
    sync_api.expect(answer).to_have_attribute("data-status", "error", timeout=15_000)
    sync_api.expect(answer).to_contain_text("value")
    card.locator('input[name="threshold"]').fill("0.4")
    card.get_by_role("button", name="Set").click()
    sync_api.expect(answer).to_contain_text("threshold 0.4", timeout=15_000)
    sync_api.expect(answer).to_have_attribute("data-status", "ok")

    modes = card.locator("button[data-mode]")  # the contract's servo modes, read from /api/vocabulary
    assert modes.all_inner_texts() == [mode.value for mode in ServoMode]
    modes.filter(has_text="sweep").click()
    sync_api.expect(card.locator('[data-field="mode"]')).to_have_text("sweep", timeout=15_000)

    card.get_by_role("button", name="take snapshot").click()
    sync_api.expect(answer).to_contain_text("JPEG", timeout=15_000)
    sync_api.expect(card.locator("img.snap")).to_be_visible(timeout=15_000)
    assert card.locator("img.snap").evaluate("img => img.complete && img.naturalWidth") > 0

    site = page.locator('#sites article[data-site="demo"]')
    site.get_by_role("button", name="sweep").click()
    site_answer = site.locator(".answer")
    sync_api.expect(site_answer).to_have_attribute("data-status", "ok", timeout=20_000)
    for index in range(1, NODES + 1):
        sync_api.expect(site_answer).to_contain_text(f"demo-{index}: ok")
    page.screenshot(path=str(shots / "control.png"), full_page=True)


def test_events_page_filters_and_exports_csv(demo: DemoSite, page: Any, shots: Path) -> None:
    page.goto(f"{demo.url}events.html")
    rows = page.locator("#events tbody tr[data-id]")
    sync_api.expect(rows.first).to_be_visible(timeout=15_000)
    page.screenshot(path=str(shots / "events.png"), full_page=True)
    shown = set(rows.evaluate_all("rows => rows.map(r => r.dataset.id)"))
    first_id = rows.first.get_attribute("data-id")
    face_score = _call(f"{demo.url}api/events/{first_id}")["face_score"]
    expected = "\u2013" if face_score is None else f"{face_score:.2f}"
    sync_api.expect(rows.first.locator("td.face")).to_have_text(expected)
    with page.expect_download() as download_info:
        page.locator("#csv").click()
    path = download_info.value.path()
    with open(path, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert table and list(table[0])[:4] == ["id", "site", "node", "label"]
    assert shown <= {row["id"] for row in table}

    page.locator('select[name="node"]').select_option("demo/demo-3")
    page.get_by_role("button", name="Filter").click()
    sync_api.expect(page.locator("#csv")).to_have_attribute("href", "api/events.csv?site=demo&node=demo-3")
    sync_api.expect(rows.filter(has_not_text="demo-3 · demo")).to_have_count(0)  # the filtered page came
    sync_api.expect(rows.first).to_be_visible()
    with page.expect_download() as download_info:
        page.locator("#csv").click()
    with open(download_info.value.path(), newline="") as fh:
        filtered = list(csv.DictReader(fh))
    assert filtered and {row["node"] for row in filtered} == {"demo-3"}


def test_compliance_page_draws_each_node(demo: DemoSite, page: Any, shots: Path) -> None:
    page.goto(f"{demo.url}compliance.html")
    table = page.locator("#summary tbody tr[data-node]")
    sync_api.expect(table.first).to_be_visible(timeout=15_000)
    stats = _call(f"{demo.url}api/stats")
    sync_api.expect(table).to_have_count(len(stats["per_node"]))
    for entry in stats["per_node"]:
        key = f"{entry['site']}/{entry['node']}"
        sync_api.expect(page.locator(f'#chart circle[data-node="{key}"]').first).to_be_attached()
    assert page.locator("#overall").inner_text().endswith("%")
    page.screenshot(path=str(shots / "compliance.png"), full_page=True)


def test_pages_fit_a_phone(demo: DemoSite, browser: Any, shots: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True)
    tab = context.new_page()
    try:
        pages = {
            "index.html": "#nodes article",
            "events.html": "#events tbody tr[data-id]",
            "compliance.html": "#summary tbody tr[data-node]",
            "control.html": "#controls article",
        }
        for name, filled in pages.items():
            tab.goto(f"{demo.url}{name}")
            sync_api.expect(tab.locator(filled).first).to_be_visible(timeout=15_000)
            overflow = tab.evaluate("document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"{name} is {overflow} px wider than a phone screen"
        tab.goto(demo.url)
        sync_api.expect(tab.locator('#nodes article[data-status="online"]')).to_have_count(NODES, timeout=15_000)
        sync_api.expect(tab.locator("#link")).to_have_attribute("data-state", "live", timeout=10_000)
        sync_api.expect(tab.locator('#nodes [data-field="last event"] .badge').first).to_be_visible()
        tab.screenshot(path=str(shots / "live-phone.png"))
    finally:
        context.close()


def test_a_hub_with_tokens_asks_for_one(browser: Any, broker_config: BrokerConfig, tmp_path: Path) -> None:
    token = "dashboard-test-token"
    config = HubConfig(
        broker=broker_config,
        db_url=f"sqlite:///{tmp_path / 'hub.db'}",
        sites=["authsite"],
        hub_id="dashboard-auth",
        snapshot_dir=tmp_path / "snapshots",
        http=HttpConfig(port=free_port()),
        auth=AuthConfig(tokens=[ApiToken(name="ops", sha256=hash_token(token))]),
    )
    hub = HubApp(config)
    hub.start()
    node = MqttClient(broker_config, "dashboard-auth-node")
    node.start()
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        assert node.wait_connected(5)
        node.publish(
            NodeTopics("authsite", "door-1").events,
            Event(
                type="new",
                id="auth-e1",
                site="authsite",
                node="door-1",
                ts=utc_now(),
                label="no_mask",
                score=0.9,
                box=(1, 2, 3, 4),
            ),
            qos=1,
        ).wait_for_publish(5)
        url = f"http://127.0.0.1:{hub.http_port}/"
        with pytest.raises(urllib.error.HTTPError) as refused:
            _call(f"{url}api/events")
        assert refused.value.code == 401
        tab = context.new_page()
        tab.goto(f"{url}events.html")
        dialog = tab.locator("#token-dialog")
        sync_api.expect(dialog).to_have_class("open")
        dialog.locator('input[name="token"]').fill(token)
        dialog.get_by_role("button", name="Use token").click()
        sync_api.expect(tab.locator('#events tr[data-id="auth-e1"]')).to_be_visible(timeout=15_000)
        sync_api.expect(tab.locator("#link")).to_have_attribute("data-state", "live", timeout=10_000)  # SSE too
        sync_api.expect(dialog).not_to_have_class("open")
    finally:
        context.close()
        node.stop()
        hub.stop()


class LoneNode:
    """A hub with its dashboard and one node played by a client on the real broker, for one site."""

    def __init__(self, broker: BrokerConfig, tmp_path: Path, site: str, browser: Any) -> None:
        config = HubConfig(
            broker=broker,
            db_url=f"sqlite:///{tmp_path / 'hub.db'}",
            sites=[site],
            hub_id=f"dashboard-{site}",
            snapshot_dir=tmp_path / "snapshots",
            http=HttpConfig(port=free_port()),
        )
        self.hub = HubApp(config)
        self.hub.start()
        self.client = MqttClient(broker, f"dashboard-{site}-node")
        self.client.start()
        self.topics = NodeTopics(site, "door-1")
        self.context = browser.new_context(viewport={"width": 1280, "height": 860})
        assert self.client.wait_connected(5)
        self.client.publish(self.topics.status, b"online", qos=1, retain=True).wait_for_publish(5)

    def publish_state(self, **fields: Any) -> None:
        """A retained state of door-1 with ``fields`` over a healthy default."""
        healthy: dict[str, Any] = {"threshold": 0.5, "detect": True, "model": "m"}
        state = NodeState(
            site=self.topics.site,
            node="door-1",
            ts=utc_now(),
            servo=ServoState(mode=ServoMode.OFF, min_deg=-90.0, max_deg=90.0),
            **{**healthy, **fields},
        )
        self.client.publish(self.topics.state, state, qos=1, retain=True).wait_for_publish(5)

    def card(self) -> Any:
        """The node's card on a freshly opened live page."""
        tab = self.context.new_page()
        tab.goto(f"http://127.0.0.1:{self.hub.http_port}/")
        return tab, tab.locator(f'#nodes article[data-node="{self.topics.site}/door-1"]')

    def close(self) -> None:
        self.context.close()
        self.client.publish(self.topics.state, b"", qos=1, retain=True)
        self.client.publish(self.topics.status, b"", qos=1, retain=True)
        self.client.stop()
        self.hub.stop()


@pytest.fixture
def lone_node(browser: Any, broker_config: BrokerConfig, tmp_path: Path) -> Iterator[LoneNode]:
    lone = LoneNode(broker_config, tmp_path, unique_site(), browser)
    yield lone
    lone.close()


def test_a_node_with_a_wrong_clock_is_marked(lone_node: LoneNode) -> None:
    """Its card says how far its clock is off; its event (stamped 1970) is marked in the feed."""
    site, node = lone_node.topics.site, lone_node.client
    ahead = NodeStats(site=site, node="door-1", ts=utc_now() + timedelta(hours=3), fps=4.0)
    node.publish(lone_node.topics.stats, ahead, qos=1).wait_for_publish(5)
    stamped_1970 = Event(
        type="new",
        id=f"{site}-e1",
        site=site,
        node="door-1",
        ts=datetime(1970, 1, 1, tzinfo=UTC),
        label="mask",
        score=0.9,
        box=(1, 2, 3, 4),
    )
    node.publish(lone_node.topics.events, stamped_1970, qos=1).wait_for_publish(5)
    _until(lambda: _call(f"http://127.0.0.1:{lone_node.hub.http_port}/api/events")["total"], 15, "the event stored")
    tab, card = lone_node.card()
    sync_api.expect(card.locator('[data-field="clock"]')).to_have_text("clock off by 3 h (ahead)", timeout=15_000)
    sync_api.expect(tab.locator(f'#feed li[data-id="{site}-e1"] .clock-skewed')).to_have_text("clock off")


def test_live_page_on_a_wall_screen(demo: DemoSite, browser: Any, shots: Path) -> None:
    context = browser.new_context(viewport={"width": 1920, "height": 1080})
    tab = context.new_page()
    try:
        tab.goto(demo.url)
        sync_api.expect(tab.locator('#nodes article[data-status="online"]')).to_have_count(NODES, timeout=15_000)
        sync_api.expect(tab.locator("#link")).to_have_attribute("data-state", "live", timeout=10_000)
        # larger type from a distance: the root font grows on wide screens
        assert tab.evaluate("parseFloat(getComputedStyle(document.documentElement).fontSize)") >= 20
        cards = tab.locator("#nodes article").evaluate_all("cards => cards.map(c => c.getBoundingClientRect().top)")
        assert len(set(round(top) for top in cards)) == 1  # every node side by side, none below the fold
        tab.screenshot(path=str(shots / "live-wall.png"))
    finally:
        context.close()


def test_a_stopped_node_turns_offline_on_both_pages(demo: DemoSite, page: Any) -> None:
    """Runs last in this module: it stops one of the demo's nodes."""
    page.goto(demo.url)
    card = page.locator('#nodes article[data-node="demo/demo-2"]')
    sync_api.expect(card).to_have_attribute("data-status", "online", timeout=15_000)
    demo.processes["demo-2"].terminate()  # a clean stop publishes the retained 'offline'
    assert demo.processes["demo-2"].wait(30) == 0
    sync_api.expect(card).to_have_attribute("data-status", "offline", timeout=20_000)
    sync_api.expect(card.locator(".dot")).to_have_class("dot offline")
    page.goto(f"{demo.url}control.html")
    sync_api.expect(page.locator('#controls article[data-node="demo/demo-2"]')).to_have_attribute(
        "data-status", "offline", timeout=15_000
    )


def test_a_node_whose_camera_is_down_gets_a_red_card_with_the_reason(lone_node: LoneNode) -> None:
    """Issue 16 probe: a dead camera looked healthy; its card now turns red naming why, and back when it recovers."""
    reason = "cannot open camera '/dev/video0' (missing, busy or unsupported)"
    lone_node.publish_state(camera_ok=False, camera_error=reason)
    tab, card = lone_node.card()
    sync_api.expect(card).to_have_attribute("data-camera", "down", timeout=15_000)
    sync_api.expect(card).to_have_class("card camera-down")
    sync_api.expect(card.locator('[data-field="camera"]')).to_have_text(reason)
    red = tab.evaluate("getComputedStyle(document.querySelector('article.camera-down')).borderTopColor")
    assert red == "rgb(217, 48, 37)"  # --no-mask
    lone_node.publish_state()
    sync_api.expect(card).to_have_attribute("data-camera", "ok", timeout=15_000)
    sync_api.expect(card.locator('[data-field="camera"]')).to_have_count(0)


def test_a_rolled_back_model_shows_its_reason_on_the_card(lone_node: LoneNode) -> None:
    """Issue 18: a pushed model that was refused or rolled back names why on the node's card (the node's text)."""
    reason = (
        "model slow@4f287b594208 refused: rolled back: capacity fell from 80.8 to 17.3 frames per second of "
        "processing (under 50% of before; frame rate 5.0 -> 4.7 fps)"
    )
    lone_node.publish_state(model="mask_classifier_int8@52b663296e44", model_error=reason)
    _, card = lone_node.card()
    sync_api.expect(card.locator('[data-field="model"]')).to_have_text(
        "mask_classifier_int8@52b663296e44", timeout=15_000
    )
    sync_api.expect(card.locator('[data-field="model error"]')).to_have_text(reason)
    lone_node.publish_state(model="mask_classifier_f16@0640e94b4057")
    sync_api.expect(card.locator('[data-field="model error"]')).to_have_count(0, timeout=15_000)
