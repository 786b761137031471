"""The maskwatch command: help, and the missing-extra hint."""

from __future__ import annotations

import subprocess
import sys

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
