"""Session-wide fixtures: a private real Mosquitto, paths to the team's shared data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devsite.broker import LocalMosquitto, mosquitto_binary
from shared.config import BrokerConfig

if TYPE_CHECKING:
    from hub.storage.database import Store

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKWATCH_SHARED", REPO.parent / "shared"))
FACE_MASK = SHARED / "datasets" / "face-mask"
SCENES = SHARED / "datasets" / "face-mask-scenes"
WEIGHTS = SHARED / "weights"


def need(path: Path) -> Path:
    """Skip the calling test with a clear reason when a shared data folder is absent."""
    if not path.exists():
        pytest.skip(f"team data not found at {path} (set MASKWATCH_SHARED)")
    return path


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[LocalMosquitto]:
    """One private Mosquitto for the whole test session, on a free loopback port."""
    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed: run 'bash tests/run' (installs it with apt-get as root)")
    broker = LocalMosquitto().start()
    yield broker
    broker.close()


@pytest.fixture
def restartable_mosquitto() -> Iterator[LocalMosquitto]:
    """A private Mosquitto for one test, which the test may stop and restart (fault tests)."""
    broker = LocalMosquitto().start()
    yield broker
    broker.close()


@pytest.fixture
def broker_config(mosquitto: LocalMosquitto) -> BrokerConfig:
    """Broker settings pointing at the session's private Mosquitto."""
    return BrokerConfig(
        host=mosquitto.host, port=mosquitto.port, keepalive_s=10, reconnect_min_s=0.2, reconnect_max_s=2.0
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A migrated hub database in a fresh SQLite file."""
    from hub.storage.database import Store

    s = Store(f"sqlite:///{tmp_path / 'hub.db'}")
    s.migrate()
    yield s
    s.close()
