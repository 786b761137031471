"""The maskwatch command: help, and the missing-extra hint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from shared.cli import main, missing_extra
from shared.errors import MissingExtraError


def test_help_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "shared.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
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


@pytest.mark.parametrize("argv", [
    ["servo", "--site", "hq", "--node", "door-1", "--angle", "nan"],
    ["servo", "--site", "hq", "--node", "door-1", "--angle", "inf"],
    ["threshold", "--site", "hq", "--node", "door-1", "nan"],
    ["threshold", "--site", "hq", "--node", "door-1", "0.5", "--timeout", "-1"],
    ["alerts", "--count", "-1"],
    ["alerts", "--count", "0"],
    ["events", "--limit", "0"],
])
def test_bad_arguments_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_a_duration_beyond_the_calendar_is_a_clear_usage_error(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "--db", str(tmp_path / "m.db"), "--since", "99999999d"]) == 2
    err = capsys.readouterr().err
    assert "99999999d" in err and "Traceback" not in err
