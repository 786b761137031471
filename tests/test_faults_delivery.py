"""No event lost between the camera and the database: a node streams street photos to a hub through real brokers,
a fault strikes mid-stream, and the hub's stored set is compared with an undisturbed run of the same photos.

Real processes throughout: ``maskwatch edge --once --profile crowd`` (mock pins, real models, snapshots on),
``maskwatch hub``, Mosquitto. Brokers that are SIGKILLed save their state rarely (``autosave_interval 600``), as
a production broker between two autosaves, so a crash loses what they had acknowledged. The comparison is the
*stored set* of :mod:`delivery_support` (same events, same messages, same snapshots, no row twice). When the node
itself is killed, the restarted node processes the photos again with new event ids: then everything the killed
node had written is stored exactly as written, and the restarted run's stored set equals the undisturbed one.
Waits poll for conditions; the fault durations are the only sleeps.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from delivery_support import StoredEvent, Uplink, photo_folder, stored_messages, stored_set
from deploy_site import HUB, ShippedSite
from fault_support import EdgeProcess, HubProcess, stop_all

from devsite.broker import LocalMosquitto
from shared.config import BrokerConfig
from tests.polling import unique_site, wait_until

pytestmark = pytest.mark.slow

PHOTOS = 40
#: A broker that saves its in-memory state only every ten minutes: a SIGKILL loses what it held.
RARE_AUTOSAVE = "autosave_interval 600"
NO_PERSISTENCE = "persistence false"
NODE = "door-1"


def quick(broker: LocalMosquitto) -> BrokerConfig:
    """A node's settings: back within a second of the broker."""
    return BrokerConfig(host=broker.host, port=broker.port, keepalive_s=5, reconnect_min_s=0.2, reconnect_max_s=1.0)


def patient(broker: LocalMosquitto) -> BrokerConfig:
    """A hub's settings: a longer backoff, so nodes are back first (and replay into a broker without the hub)."""
    return BrokerConfig(host=broker.host, port=broker.port, keepalive_s=5, reconnect_min_s=2.0, reconnect_max_s=4.0)


def node_settings(photos: Path) -> dict[str, Any]:
    return {
        "source": str(photos),
        "profile": "crowd",
        "snapshot": {"mode": "on"},
        "outbox": {"drain_timeout_s": 150, "resend_after_s": 2, "resend_max_s": 8},
    }


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    """Processes, brokers and relays to stop at the end of the test, whatever happens."""
    items: list[Any] = []
    yield items

    def stop(item: Any) -> None:
        if isinstance(item, HubProcess | EdgeProcess):
            item.stop()
        elif isinstance(item, Uplink):
            item.cut()
        else:
            item.close()

    stop_all(items, stop)


@pytest.fixture
def broker(procs: list[Any]) -> LocalMosquitto:
    """A broker of the test that saves its state rarely."""
    started = LocalMosquitto(extra_config=RARE_AUTOSAVE).start()
    procs.append(started)
    return started


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return photo_folder(tmp_path_factory.mktemp("photos") / "street", PHOTOS)


@pytest.fixture(scope="module")
def undisturbed(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Counter[StoredEvent]:
    """The stored set of an undisturbed run of the photos."""
    workdir = tmp_path_factory.mktemp("undisturbed")
    site = unique_site()
    with LocalMosquitto() as broker:
        hub = HubProcess(quick(broker), workdir, [site]).start()
        edge = EdgeProcess(quick(broker), workdir, site, NODE, once=True, settings=node_settings(photos)).start()
        try:
            assert edge.wait(300) == 0, edge.log_tail()
            stored = stored_set(hub.db_url, site)
        finally:
            edge.stop()
            hub.stop()
    assert sum(stored.values()) >= 12 and any(has_snapshot for _key, has_snapshot in stored), stored
    return stored


class Run:
    """One disturbed run: a hub and a node of a fresh site, and what to compare at the end."""

    def __init__(
        self,
        node_broker: BrokerConfig,
        hub_broker: BrokerConfig,
        workdir: Path,
        photos: Path,
        procs: list[Any],
        *,
        share_group: str | None = None,
    ) -> None:
        self.site = unique_site()
        self.hub = HubProcess(hub_broker, workdir, [self.site], share_group=share_group)
        self.edge = EdgeProcess(node_broker, workdir, self.site, NODE, once=True, settings=node_settings(photos))
        procs += [self.hub, self.edge]

    def start(self) -> Run:
        self.hub.start()
        self.edge.start()
        return self

    def stored_events(self) -> int:
        return len(stored_messages(self.hub.db_url, self.site))

    def mid_stream(self, undisturbed: Counter[StoredEvent]) -> Run:
        """Wait until an eighth of the expected events are stored; fail unless the node is still streaming then."""
        expected = sum(undisturbed.values())
        assert wait_until(lambda: self.stored_events() >= max(1, expected // 8), 180, every=0.05), self.edge.log_tail()
        assert self.edge.alive and self.stored_events() < expected // 2, "the stream is too short for the fault"
        return self

    def finish(self) -> None:
        """The node delivers everything and exits 0."""
        assert self.edge.wait(300) == 0, self.edge.log_tail()

    def written(self) -> dict[str, set[str]]:
        """Event id -> payloads the node has written so far: stored ones and those still in its outbox."""
        out = {event_id: set(payloads) for event_id, payloads in stored_messages(self.hub.db_url, self.site).items()}
        for topic, payload in self.edge.outbox():
            if topic.endswith("/events"):
                out.setdefault(json.loads(payload)["id"], set()).add(payload.decode())
        return out


def assert_same_as_undisturbed(run: Run, undisturbed: Counter[StoredEvent], ids: set[str] | None = None) -> None:
    stored = stored_set(run.hub.db_url, run.site, ids)
    missing, extra = undisturbed - stored, stored - undisturbed
    assert not missing and not extra, (
        f"{sum(missing.values())} stored events missing, {sum(extra.values())} extra "
        f"(of {sum(undisturbed.values())}): {list(missing)[:2]} {list(extra)[:2]}"
    )


def assert_killed_node_lost_nothing(run: Run, written: dict[str, set[str]], undisturbed: Counter[StoredEvent]) -> None:
    """What the killed node wrote is stored exactly; the restarted node's events are the undisturbed set."""
    stored = stored_messages(run.hub.db_url, run.site)
    lost = {event_id: payloads - stored.get(event_id, set()) for event_id, payloads in written.items()}
    assert not any(lost.values()), f"lost messages of {[k for k, v in lost.items() if v][:3]}"
    assert all(stored[event_id] == payloads for event_id, payloads in written.items())
    assert_same_as_undisturbed(run, undisturbed, set(stored) - set(written))


@pytest.mark.parametrize("persistence", [RARE_AUTOSAVE, NO_PERSISTENCE], ids=["persistence", "no-persistence"])
def test_broker_sigkill_mid_stream(
    persistence: str, photos: Path, undisturbed: Counter[StoredEvent], tmp_path: Path, procs: list[Any]
) -> None:
    """With persistence, the broker restarts from its last save, which holds the hub's session (saved by a clean
    restart before the stream) but none of what it acknowledged since."""
    broker = LocalMosquitto(extra_config=persistence).start()
    procs.append(broker)
    run = Run(quick(broker), patient(broker), tmp_path, photos, procs)
    run.hub.start()
    if persistence == RARE_AUTOSAVE:
        broker.restart()  # SIGTERM saves the state: the hub's session and subscription
        assert wait_until(lambda: run.hub.get("/healthz").get("mqtt") is True, 30)
    run.edge.start()
    run.mid_stream(undisturbed)
    broker.stop(kill=True)
    time.sleep(3)  # the broker stays down
    broker.start()
    run.finish()
    assert_same_as_undisturbed(run, undisturbed)


def test_broker_restarted_while_the_hub_is_down(
    broker: LocalMosquitto, photos: Path, undisturbed: Counter[StoredEvent], tmp_path: Path, procs: list[Any]
) -> None:
    """The hub reads through a shared subscription, which Mosquitto 2.0 does not restore after a restart."""
    run = Run(quick(broker), patient(broker), tmp_path, photos, procs, share_group="hubs").start()
    run.mid_stream(undisturbed).hub.kill()
    broker.stop(kill=True)
    broker.start()
    time.sleep(3)  # the broker is back, the hub still down: the node keeps its events
    run.hub.start()
    run.finish()
    assert_same_as_undisturbed(run, undisturbed)


def test_hub_sigkill_mid_stream(
    broker: LocalMosquitto, photos: Path, undisturbed: Counter[StoredEvent], tmp_path: Path, procs: list[Any]
) -> None:
    run = Run(quick(broker), quick(broker), tmp_path, photos, procs).start()
    run.mid_stream(undisturbed).hub.kill()
    time.sleep(3)  # the hub stays down
    run.hub.start()
    run.finish()
    assert_same_as_undisturbed(run, undisturbed)


def test_node_sigkill_mid_stream(
    broker: LocalMosquitto, photos: Path, undisturbed: Counter[StoredEvent], tmp_path: Path, procs: list[Any]
) -> None:
    run = Run(quick(broker), quick(broker), tmp_path, photos, procs).start()
    run.mid_stream(undisturbed).edge.kill()
    written = run.written()
    run.edge.start()  # the same outbox: first what the killed node left, then the photos again
    run.finish()
    assert_killed_node_lost_nothing(run, written, undisturbed)


def test_power_cut_kills_broker_hub_and_node(
    broker: LocalMosquitto, photos: Path, undisturbed: Counter[StoredEvent], tmp_path: Path, procs: list[Any]
) -> None:
    run = Run(quick(broker), quick(broker), tmp_path, photos, procs).start()
    run.mid_stream(undisturbed).edge.kill()
    run.hub.kill()
    broker.stop(kill=True)
    written = run.written()
    broker.start()
    run.hub.start()
    run.edge.start()
    run.finish()
    assert_killed_node_lost_nothing(run, written, undisturbed)


def test_two_broker_site_uplink_cut_then_building_broker_sigkill(
    photos: Path, undisturbed: Counter[StoredEvent], tmp_path: Path, procs: list[Any]
) -> None:
    """Nodes on a building broker bridged (Mosquitto's bridge, QoS 1, cleansession false) to the central broker of
    the hub. The uplink is cut for 10 s mid-stream, then the building broker is SIGKILLed (losing what it queued
    for the uplink) and restarted."""
    central = LocalMosquitto(extra_config=RARE_AUTOSAVE).start()
    procs.append(central)
    uplink = Uplink(central.host, central.port).open()
    procs.append(uplink)
    building = LocalMosquitto(
        extra_config="\n".join(
            [
                RARE_AUTOSAVE,
                "connection uplink",
                f"address 127.0.0.1:{uplink.port}",
                "topic maskwatch/# both 1",
                "cleansession false",
                f"remote_clientid building-{tmp_path.name[-20:]}",
                "restart_timeout 1 2",
                "keepalive_interval 5",
                "notifications false",
            ]
        )
    ).start()
    procs.append(building)
    run = Run(quick(building), quick(central), tmp_path, photos, procs).start().mid_stream(undisturbed)
    uplink.cut()
    time.sleep(10)  # the uplink stays cut; the building broker queues what the node sends
    building.stop(kill=True)
    uplink.open()
    time.sleep(2)  # the building broker stays down
    building.start()
    run.finish()
    assert_same_as_undisturbed(run, undisturbed)


def test_wrong_login_keeps_every_event_exits_1_then_the_right_login_delivers_them(
    photos: Path, undisturbed: Counter[StoredEvent], tmp_path: Path, procs: list[Any]
) -> None:
    """The shipped ACL: node hq/door-1 started with hq/door-2's login (a copied credentials file). Before that, a
    wrong password: the refused connection is named too."""
    site = ShippedSite(("hq/door-1", "hq/door-2")).start()
    procs.append(site)
    hub = HubProcess(site.login(HUB), tmp_path, ["hq"])
    procs.append(hub.start())
    empty = tmp_path / "no-more-photos"  # no face: reruns only replay the outbox (an empty folder is a dead source)
    empty.mkdir()
    cv2.imwrite(str(empty / "wall.png"), np.full((120, 160, 3), 128, np.uint8))
    no_login = EdgeProcess(
        site.login(f"hq/{NODE}", password="guess"),
        tmp_path / "guess",
        "hq",
        NODE,
        once=True,
        settings={**node_settings(empty), "outbox": {"drain_timeout_s": 2}},
    )
    procs.append(no_login)
    assert no_login.start().wait(120) == 1
    assert "never reached (Not authorized)" in no_login.log_path.read_text(), no_login.log_tail()
    wrong = EdgeProcess(site.login("hq/door-2"), tmp_path, "hq", NODE, once=True, settings=node_settings(photos))
    procs.append(wrong)
    assert wrong.start().wait(300) == 1, wrong.log_tail()
    refusal = f"refused publish to maskwatch/hq/{NODE}/events: Not authorized"
    lines = [line for line in wrong.log_path.read_text().splitlines() if refusal in line]
    assert len(lines) == 2, wrong.log_tail()  # logged once when it happened, and named in the exit message
    assert "not acknowledged" in lines[1] and "kept in" in lines[1]
    waiting = Counter(
        topic.rsplit("/", 2)[-1] if "/snapshot/" not in topic else "snapshot" for topic, _payload in wrong.outbox()
    )
    assert not stored_messages(hub.db_url, "hq")
    assert waiting["events"] == sum(len(key) for key, _snap in undisturbed.elements())
    assert waiting["snapshot"] == sum(snap for _key, snap in undisturbed.elements())

    right = EdgeProcess(
        site.login(f"hq/{NODE}"),
        tmp_path,
        "hq",
        NODE,
        once=True,
        settings={**node_settings(photos), "source": str(empty)},
    )
    procs.append(right)
    assert right.start().wait(300) == 0, right.log_tail()
    assert not right.outbox()
    stored = stored_set(hub.db_url, "hq")
    assert stored == undisturbed, (undisturbed - stored, stored - undisturbed)


#: Mosquitto's dynamic security plugin (shipped with Mosquitto 2.0): unlike its ACL file, it refuses a SUBSCRIBE.
DYNSEC = Path("/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")


@pytest.mark.skipif(not DYNSEC.exists(), reason=f"no Mosquitto dynamic security plugin at {DYNSEC}")
def test_refused_subscription_to_the_acks_keeps_every_event_and_exits_1(tmp_path: Path, procs: list[Any]) -> None:
    """A broker whose policy refuses the node's SUBSCRIBE to its ack topic (SUBACK 0x87)."""
    policy = tmp_path / "dynsec.json"
    policy.write_text(
        json.dumps(
            {
                "defaultACLAccess": {
                    "publishClientSend": True,
                    "publishClientReceive": True,
                    "subscribe": True,
                    "unsubscribe": True,
                },
                "clients": [],
                "groups": [{"groupname": "anonymous", "roles": [{"rolename": "no-acks"}]}],
                "roles": [
                    {
                        "rolename": "no-acks",
                        "acls": [
                            {"acltype": "subscribePattern", "topic": "maskwatch/+/+/ack", "priority": 0, "allow": False}
                        ],
                    }
                ],
                "anonymousGroup": "anonymous",
            }
        )
    )
    broker = LocalMosquitto(extra_config=f"plugin {DYNSEC}\nplugin_opt_config_file {policy}").start()
    procs.append(broker)
    site = unique_site()
    few = photo_folder(tmp_path / "few", 3)
    edge = EdgeProcess(quick(broker), tmp_path, site, NODE, once=True, settings=node_settings(few))
    procs.append(edge)
    assert edge.start().wait(300) == 1, edge.log_tail()
    refusal = f"refused the subscription to maskwatch/{site}/{NODE}/ack: Not authorized"
    lines = [line for line in edge.log_path.read_text().splitlines() if refusal in line]
    assert len(lines) == 2 and "not acknowledged" in lines[1], edge.log_tail()
    ((count, last),) = edge._outbox_query("SELECT COUNT(*), MAX(seq) FROM outbox")
    assert count == last and any(topic.endswith("/events") for topic, _payload in edge.outbox()), (
        "every event stays in the outbox (numbered 1..n, none removed)"
    )
