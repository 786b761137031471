"""The maskwatch command: help, and the missing-extra hint."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.cli import main, missing_extra
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
        ["threshold", "--site", "hq", "--node", "door-1", "nan"],
        ["threshold", "--site", "hq", "--node", "door-1", "0.5", "--timeout", "-1"],
        ["alerts", "--count", "-1"],
        ["alerts", "--count", "0"],
        ["events", "--limit", "0"],
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
