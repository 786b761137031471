"""The live preview: an annotated MJPEG stream and a still, off unless asked for."""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from devsite.broker import free_port
from shared.config import BrokerConfig
from tests import edge_node
from tests.edge_node import node_config, running_node
from tests.polling import wait_until

mock_pins = edge_node.mock_pins  # fixture
models = edge_node.models  # fixture


def test_preview_serves_annotated_stream_and_still(
    tmp_path: Path, broker_config: BrokerConfig, mock_pins: Any, models: tuple[Any, Any]
) -> None:
    port = free_port()
    cfg = node_config(
        broker_config,
        tmp_path,
        source="scene:builtin",
        preview={"bind": f"127.0.0.1:{port}"},
        servo={"mode": "hold", "start_deg": 60, "speed_dps": 600},
    )
    with running_node(cfg, mock_pins, models, broker_config) as (app, _listener):
        assert wait_until(lambda: any(f.confirmed for f in app.pipeline.latest().faces), 5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/snapshot.jpg", timeout=5) as reply:
            assert reply.headers["Content-Type"] == "image/jpeg"
            still = cv2.imdecode(np.frombuffer(reply.read(), np.uint8), cv2.IMREAD_COLOR)
        assert still.shape == (cfg.scene.height, cfg.scene.width, 3)
        raw = app.pipeline.latest().frame.image
        assert float(np.abs(still.astype(int) - raw.astype(int)).mean()) > 0.5  # boxes and text drawn on it
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stream.mjpg", timeout=5) as stream:
            assert stream.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            head = stream.read(200)
        assert b"--maskwatchframe" in head and b"image/jpeg" in head


def test_preview_is_off_by_default(
    tmp_path: Path, broker_config: BrokerConfig, mock_pins: Any, models: tuple[Any, Any]
) -> None:
    cfg = node_config(broker_config, tmp_path, source="scene:builtin")
    assert cfg.preview.bind is None
    with running_node(cfg, mock_pins, models, broker_config) as (app, _listener):
        assert app.preview is None


def test_preview_on_a_busy_port_is_a_clear_config_error() -> None:
    import socket

    from edge.delivery.preview import PreviewServer
    from shared.errors import ConfigError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ConfigError, match=f"preview.bind 127.0.0.1:{port}: cannot listen"):
            PreviewServer("127.0.0.1", port, lambda: None)
