"""The hub with a real edge node (in-process EdgeApp, mock pins, real models) on the real broker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hub_support import hub_config, running_hub
from sqlalchemy import func, select

from hub.storage.database import Store
from hub.storage.rows import CommandRow, EventRow, NodeRow
from shared.cli import main
from shared.config import BrokerConfig
from tests import edge_node
from tests.conftest import FACE_MASK, need
from tests.edge_node import make_scene, node_config, running_node
from tests.polling import unique_site, wait_until

mock_pins = edge_node.mock_pins  # fixture
models = edge_node.models  # fixture


@pytest.mark.slow
def test_events_registry_and_commands_with_a_real_node(
    tmp_path: Path, broker_config: BrokerConfig, mock_pins: Any, models: tuple[Any, Any]
) -> None:
    need(FACE_MASK)
    site = unique_site()
    face = sorted((FACE_MASK / "without_mask").iterdir())[3]
    scene = make_scene(tmp_path / "scene", [(face, 0, "no_mask")])
    node_cfg = node_config(
        broker_config,
        tmp_path,
        site=site,
        source=f"scene:{scene}",
        scene={"fps": 15},
        servo={"mode": "hold", "start_deg": 0},
    )
    config = hub_config(broker_config, tmp_path / "hub", site)
    with running_hub(config), running_node(node_cfg, mock_pins, models, broker_config):
        store = Store(config.db_url)

        def stored(model: type, *where: object) -> int:
            with store.session() as session:
                return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)

        assert wait_until(lambda: stored(EventRow, EventRow.node == node_cfg.node) >= 1, 30)
        assert wait_until(lambda: stored(NodeRow, NodeRow.online.is_(True), NodeRow.model.is_not(None)) == 1, 10)
        code = main(
            [
                "threshold",
                "--broker",
                broker_config.address,
                "--site",
                site,
                "--node",
                node_cfg.node,
                "0.7",
                "--db",
                config.db_url,
            ]
        )
        assert code == 0

        def node_threshold() -> float | None:
            with store.session() as session:
                row = session.get(NodeRow, (site, node_cfg.node))
                return None if row is None or row.state is None else row.state.get("threshold")

        assert wait_until(lambda: node_threshold() == 0.7, 10)
        with store.session() as session:
            audit = session.scalars(select(CommandRow)).one()
            assert (audit.name, audit.status, audit.node) == ("threshold", "ok", node_cfg.node)
            node_row = session.get(NodeRow, (site, node_cfg.node))
            assert node_row is not None and node_row.desired == {"threshold": 0.7}
        store.close()
