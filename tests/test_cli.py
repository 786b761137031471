"""The maskwatch command: help, and the missing-extra hint."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.cli import build_parser, main, missing_extra
from shared.errors import MissingExtraError


def test_help_lists_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "shared.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "usage: maskwatch" in out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: maskwatch" in capsys.readouterr().out


@pytest.mark.parametrize("module,extra", [("cv2", "edge"), ("sqlalchemy", "hub"), ("tensorflow", "train")])
def test_missing_extra_hint(module: str, extra: str) -> None:
    hint = missing_extra(ModuleNotFoundError(f"No module named '{module}'", name=module))
    assert isinstance(hint, MissingExtraError)
    assert f"pip install 'maskwatch[{extra}]'" in str(hint)


def test_unrelated_import_error_not_masked() -> None:
    assert missing_extra(ModuleNotFoundError("x", name="nonexistent_mod")) is None


@pytest.mark.parametrize(
    "argv",
    [
        ["servo", "--site", "hq", "--node", "door-1", "--angle", "nan"],
        ["servo", "--site", "hq", "--node", "door-1", "--angle", "inf"],
        ["servo", "--site", "hq", "--node", "door-1", "--angle", "1e308"],
        ["schedule", "--site", "hq", "--node", "door-1", "--timezone", "UTC", "--park-deg", "-181"],
        ["threshold", "--site", "hq", "--node", "door-1", "nan"],
        ["threshold", "--site", "hq", "--node", "door-1", "0.5", "--timeout", "-1"],
        ["alerts", "--count", "-1"],
        ["alerts", "--count", "0"],
        ["events", "--limit", "0"],
        ["events", "--site", "Bad Site"],
        ["nodes", "--site", "hq/x"],
        ["servo", "--site", "hq", "--node", "door-1,Bad Node", "--angle", "0"],
        ["threshold", "--site", "", "--node", "door-1", "0.5"],
        ["schedule", "--site", "hq", "--node", "door-1", "--timezone", "UTC", "--broker", "hub:0"],
        ["alerts", "--site", "hq", "--broker", "broker.lan:http"],
        ["edge", "--broker", "broker.lan:0"],
        ["edge", "--broker", "broker.lan:http"],
        ["edge", "--preview", "127.0.0.1:99999"],
        ["edge", "--site", "Bad Site"],
        ["edge", "--node", ""],
        ["edge", "--config", "/nonexistent/edge.yaml"],
        ["edge", "--set", "servo.mode"],
        ["edge", "--set", "=1"],
        ["detect", "--threshold", "nan", "."],
        ["detect", "--threshold", "1.5", "."],
        ["detect", "--min-face-score", "-0.1", "."],
        ["detect", "--threads", "0", "."],
        ["detect", "/nonexistent/photo.jpg"],
        ["detect", "--model", "/nonexistent/m.tflite", "."],
        ["model", "eval", "/nonexistent/crops"],
        ["model", "eval", ".", "--min-iou", "inf"],
        ["model", "fetch", "--timeout", "0"],
        ["model", "fetch", "--timeout", "nan"],
        ["model", "train", ".", "--epochs", "0"],
        ["model", "train", ".", "--batch-size", "-1"],
        ["model", "train", ".", "--validation", "2"],
        ["model", "train", ".", "--fine-tune-lr", "0"],
        ["model", "train", ".", "--fine-tune-epochs", "-1"],
        ["model", "train", "/nonexistent/data"],
        ["model", "export", ".", "--max-gap", "-1"],
    ],
)
def test_bad_arguments_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_a_duration_beyond_the_calendar_is_a_clear_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["events", "--db", str(tmp_path / "m.db"), "--since", "99999999d"]) == 2
    err = capsys.readouterr().err
    assert "99999999d" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["events", "nodes"])
def test_read_only_commands_never_create_a_database(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main([command]) == 1
    assert "no hub database" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv", [["threshold", "--site", "hq", "--node", "door-1", "0.5"], ["alerts", "--site", "hq", "--count", "1"]]
)
def test_the_broker_connect_counts_against_the_timeout(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from devsite.broker import free_port
    from hub.cli import CONNECT_WAIT_S

    started = time.monotonic()
    assert main([*argv, "--broker", f"127.0.0.1:{free_port()}", "--timeout", "1"]) == 1
    assert time.monotonic() - started < CONNECT_WAIT_S  # not the fixed 10 s connect wait on top of --timeout
    assert "cannot reach the broker" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["detect", "--threshold", "nan", "."], "argument --threshold: expected a finite number, got 'nan'"),
        (["detect", "--threshold", "1.5", "."], "argument --threshold: the value must be between 0 and 1, got 1.5"),
        (["edge", "--broker", "broker.lan:0"], "argument --broker: expected HOST:PORT, got 'broker.lan:0'"),
        (["edge", "--site", "Bad"], "argument --site: invalid site 'Bad': must match [a-z0-9_-]{1,64}"),
        (["edge", "--config", "/nonexistent/edge.yaml"], "argument --config: file not found: /nonexistent/edge.yaml"),
        (["edge", "--set", "servo.mode"], "argument --set: --set expects KEY=VALUE, got 'servo.mode'"),
        (["detect", "/nonexistent/photo.jpg"], "no such file or folder: /nonexistent/photo.jpg"),
    ],
)
def test_usage_errors_name_the_argument_and_the_rule(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_edge_keeps_the_addresses_it_was_given() -> None:
    from edge.cli import overrides_from

    args = build_parser().parse_args(["edge", "--broker", "[::1]:1884", "--preview", "127.0.0.1", "--set", "a.b=2"])
    tree = overrides_from(args)
    assert tree["broker"] == {"host": "::1", "port": 1884}
    assert tree["preview"] == {"bind": "127.0.0.1"}  # the preview's own default port (8090) applies later
    assert tree["a"] == {"b": 2}
