"""The import rules of docs/architecture.md, read from the source files with ``ast`` (nothing is imported).

Also the habits around them: every ``# type: ignore`` names its error code and says why, the README's folder
table matches the tree, and the version is written once.
"""

from __future__ import annotations

import ast
import re
import subprocess
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

import shared

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("shared", "edge", "hub", "models", "devsite")


def imported_modules(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports (at any depth: inside functions and TYPE_CHECKING too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def sources(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


IMPORTS = {str(path.relative_to(REPO)): imported_modules(path) for package in PACKAGES for path in sources(package)}


def offenders(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """The files of ``package`` that import a module under one of ``forbidden``, with those modules."""
    found = {}
    for path, modules in IMPORTS.items():
        if path.startswith(f"{package}/"):
            bad = sorted(m for m in modules if m.split(".")[0] in forbidden)
            if bad:
                found[path] = bad
    return found


def test_the_scan_sees_the_imports_that_exist() -> None:
    assert "shared.topics" in IMPORTS["edge/pipeline.py"]
    assert "hub.storage.events" in IMPORTS["hub/ingest/consumer.py"]
    assert "edge.vision.classifier" in IMPORTS["models/training/export.py"]
    assert "paho.mqtt.client" in IMPORTS["shared/mqtt.py"]


@pytest.mark.parametrize(
    "package,forbidden",
    [
        ("shared", ("edge", "hub", "models", "devsite")),
        ("edge", ("hub", "models", "devsite")),
        ("hub", ("edge", "models", "devsite")),
    ],
    ids=["shared-knows-no-side", "edge", "hub"],
)
def test_import_rules(package: str, forbidden: tuple[str, ...]) -> None:
    assert offenders(package, forbidden) == {}


def test_paho_only_in_shared_mqtt() -> None:
    users = sorted(path for path, modules in IMPORTS.items() if any(m.split(".")[0] == "paho" for m in modules))
    assert users == ["shared/mqtt.py"]


def test_imports_inside_functions_are_seen(tmp_path: Path) -> None:
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from hub.app import HubApp\n    import devsite.demo\n")
    assert imported_modules(source) == {"hub.app", "devsite.demo"}


IGNORE = re.compile(r"#\s*type:\s*ignore(?P<rest>.*)$")
REASONED = re.compile(r"^\[[a-z-]+(, *[a-z-]+)*\]\s+#\s*\S")


def test_every_type_ignore_has_a_code_and_a_reason() -> None:
    bare = []
    for package in PACKAGES:
        for path in sources(package):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                match = IGNORE.search(line)
                if match and not REASONED.match(match["rest"]):
                    bare.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert bare == []


def readme_folders() -> dict[str, str]:
    """The README's folder table: folder -> what it holds."""
    rows = re.findall(r"^\| (`[^|]+`) \| (.+) \|$", (REPO / "README.md").read_text(), re.M)
    return {name: text for names, text in rows for name in re.findall(r"`([a-z]+)/`", names)}


def test_readme_folder_table_matches_the_tree() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    top = {Path(f).parts[0] for f in tracked.stdout.splitlines() if len(Path(f).parts) > 1}
    folders = readme_folders()
    assert set(folders) == {name for name in top if not name.startswith(".")}
    for package in ("edge", "hub"):
        subpackages = {p.parent.name for p in (REPO / package).glob("*/__init__.py")}
        named = set(re.findall(r"`([a-z_]+)/`", folders[package]))
        assert named == subpackages, package


def test_version_is_written_once() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"] and "version" in pyproject["project"]["dynamic"]
    assert pyproject["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "shared.__version__"}
    assert metadata.version("maskwatch") == shared.__version__  # the installed package read it from there
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and f"## [{shared.__version__}] - " in changelog


@pytest.mark.parametrize(
    "layer,forbidden",
    [
        ("hub/services/", ("hub.api", "hub.views", "hub.ingest", "hub.web", "hub.app")),
        ("hub/storage/", ("hub.api", "hub.views", "hub.ingest", "hub.services", "hub.web", "hub.app")),
        ("hub/views.py", ("hub.api", "hub.ingest", "hub.services", "hub.web", "hub.app")),
        ("edge/delivery/", ("edge.pipeline", "edge.app", "edge.commands")),
        ("edge/vision/", ("edge.pipeline", "edge.app", "edge.commands", "edge.delivery")),
    ],
)
def test_layers_import_only_downwards(layer: str, forbidden: tuple[str, ...]) -> None:
    """The arrows of docs/architecture.md inside a side: services and views build on storage, never on the API
    or the ingest above them; the edge's delivery and vision know nothing of the pipeline that uses them."""
    upward = {
        path: sorted(m for m in modules if m.startswith(forbidden))
        for path, modules in IMPORTS.items()
        if path.startswith(layer)
    }
    assert {path: modules for path, modules in upward.items() if modules} == {}
